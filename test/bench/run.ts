/**
 * Kept for old habits (`node dist/test/bench/run.js`): the VM start benchmark,
 * now test/bench/vm-start.ts. `npm run bench` runs every benchmark (all.ts).
 */
import './vm-start.js';
