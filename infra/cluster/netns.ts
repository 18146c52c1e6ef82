/**
 * The local cluster's network: one Linux bridge with an address on this
 * machine (where the nats-server nodes listen), and one network namespace per
 * worker host, joined to the bridge by a veth pair, with its own address. All
 * names carry one random prefix per run (`mf` + 6 hex), so runs never collide
 * and remove() deletes exactly what this run made. Needs root (CAP_NET_ADMIN).
 *
 * cut(i)/heal(i) take host i's link down and up (its processes keep running,
 * its TCP connections stall): a host cut off the network, not a dead one.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);

async function ip(...args: string[]): Promise<string> {
  try {
    return (await run('ip', args)).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')} failed: ${(e.stderr || e.message).trim()}`);
  }
}

export interface NetHost {
  /** Network namespace name (`ip netns exec <ns> …`). */
  ns: string;
  /** The host's address on the bridge. */
  address: string;
  /** The veth end on the bridge side (what cut() takes down). */
  veth: string;
}

export class ClusterNetwork {
  private constructor(
    readonly prefix: string,
    readonly bridge: string,
    /** This machine's address on the bridge: nats-server listens here. */
    readonly gatewayAddress: string,
    readonly hosts: NetHost[],
  ) {}

  /** A free 10.213.X.0/24 (X random, skipping subnets already routed here). */
  private static async subnet(): Promise<string> {
    const routes = await ip('-4', 'route', 'show');
    for (let i = 0; i < 50; i++) {
      const x = 1 + Math.floor(Math.random() * 250);
      const net = `10.213.${x}`;
      if (!routes.includes(`${net}.`)) return net;
    }
    throw new Error('no free 10.213.X.0/24 subnet for the cluster bridge');
  }

  static async create(hosts: number): Promise<ClusterNetwork> {
    const prefix = `mf${randomBytes(3).toString('hex')}`;
    const net = await ClusterNetwork.subnet();
    const n = new ClusterNetwork(prefix, `${prefix}br`, `${net}.1`, []);
    try {
      await ip('link', 'add', n.bridge, 'type', 'bridge', 'forward_delay', '0'); // ports forward at once
      await ip('addr', 'add', `${n.gatewayAddress}/24`, 'dev', n.bridge);
      await ip('link', 'set', n.bridge, 'up');
      for (let i = 1; i <= hosts; i++) {
        const h: NetHost = { ns: `${prefix}h${i}`, address: `${net}.${10 + i}`, veth: `${prefix}v${i}` };
        n.hosts.push(h);
        const peer = `${prefix}p${i}`;
        await ip('netns', 'add', h.ns);
        await ip('link', 'add', h.veth, 'type', 'veth', 'peer', 'name', peer);
        await ip('link', 'set', peer, 'netns', h.ns);
        await ip('link', 'set', h.veth, 'master', n.bridge);
        await ip('link', 'set', h.veth, 'up');
        await ip('-n', h.ns, 'link', 'set', 'lo', 'up');
        await ip('-n', h.ns, 'addr', 'add', `${h.address}/24`, 'dev', peer);
        await ip('-n', h.ns, 'link', 'set', peer, 'up');
      }
    } catch (err) {
      await n.remove();
      throw err;
    }
    return n;
  }

  /** Takes host i's link down (1-based): the host is cut off everything. */
  cut(i: number): Promise<string> {
    return ip('link', 'set', this.host(i).veth, 'down');
  }

  heal(i: number): Promise<string> {
    return ip('link', 'set', this.host(i).veth, 'up');
  }

  host(i: number): NetHost {
    const h = this.hosts[i - 1];
    if (!h) throw new Error(`no cluster host ${i}`);
    return h;
  }

  /** Deletes every namespace (its veth end goes with it, and so the pair), veth and the bridge of this run. */
  async remove(): Promise<void> {
    for (const h of this.hosts) {
      await ip('netns', 'del', h.ns).catch(() => '');
      await ip('link', 'del', h.veth).catch(() => ''); // gone with the namespace already, normally
    }
    await ip('link', 'del', this.bridge).catch(() => '');
  }

  /** Namespaces and links of this run still present (tests check it is empty after remove()). */
  async leftovers(): Promise<string[]> {
    const out: string[] = [];
    for (const line of (await ip('netns', 'list')).split('\n')) if (line.startsWith(this.prefix)) out.push(line.split(' ')[0]!);
    for (const m of (await ip('-o', 'link', 'show')).matchAll(/^\d+: ([^:@\s]+)/gm)) if (m[1]!.startsWith(this.prefix)) out.push(m[1]!);
    return out;
  }
}
