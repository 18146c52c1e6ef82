/**
 * QEMU user networking's `guestfwd=...-cmd:` runs this once per guest connection:
 * it joins the command's stdin/stdout to a TCP connection to 127.0.0.1:<port>.
 * (The `-tcp:host:port` form of guestfwd is a single chardev: only ONE guest
 * connection at a time, so a second NATS client in dom0 would hang.)
 */
import net from 'node:net';

const port = Number(process.argv[2]);
const s = net.createConnection({ host: '127.0.0.1', port });
process.stdin.pipe(s);
s.pipe(process.stdout);
const end = () => process.exit(0);
s.on('close', end);
s.on('error', end);
process.stdin.on('end', () => s.end());
