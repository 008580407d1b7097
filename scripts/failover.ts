/**
 * How long sync stalls when one NATS node dies (docs/BENCHMARKS.md, "Losing a NATS node"); the round is
 * test/helpers/failover.ts.
 *
 *   node dist/scripts/failover.js [--rounds 3] [--case leader|follower|both]
 */
import { Command } from 'commander';
import { failoverRound } from '../test/helpers/failover.js';

async function main(): Promise<void> {
  const o = new Command()
    .option('--rounds <N>', 'rounds per case', '3')
    .option('--case <CASE>', 'leader, follower or both', 'both')
    .parse()
    .opts<{ rounds: string; case: string }>();
  const cases = o.case === 'both' ? (['leader', 'follower'] as const) : [o.case as 'leader' | 'follower'];
  for (const kase of cases) {
    for (let i = 0; i < Number(o.rounds); i++) {
      const res = await failoverRound(kase, i % 3);
      console.log(
        `${kase}: killed n${res.killed + 1} (leader of: ${res.led.join(', ') || 'nothing'}): push stall ${res.pushStallMs.toFixed(0)} ms, replica stall ${res.replicaStallMs.toFixed(0)} ms over ${res.commits} commits; files equal: ${res.equal}`,
      );
    }
  }
}

if (process.argv[1]?.endsWith('failover.js')) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
}
