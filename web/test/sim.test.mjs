// The browser's port of the wave simulation against values the Rust
// simulation gives for the same inputs (pinned on both sides: sim.rs's test
// `the_browser_port_pins_these_hashes` asserts the same hashes), and the
// JSON reading that keeps 64-bit seeds exact.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { build } from "esbuild";

const bundle = await build({
  stdin: { contents: 'export * from "./src/sim.ts"; export * from "./src/json.ts";', resolveDir: ".", loader: "ts" },
  bundle: true,
  format: "esm",
  write: false,
  logLevel: "warning",
});
const sim = await import(`data:text/javascript;base64,${Buffer.from(bundle.outputFiles[0].text).toString("base64")}`);

/** Rules as the server serialises them (GetReplay's rules_json): a frozen copy the Rust test reads too. */
function meadowRules() {
  return JSON.parse(readFileSync(new URL("./fixtures/rules.json", import.meta.url), "utf8"));
}

test("SplitMix64 and FNV-1a give the Rust values", () => {
  const r = new sim.Rng(42n);
  assert.equal(r.nextU64(), 13679457532755275413n);
  assert.equal(sim.hex16(sim.fnv(new TextEncoder().encode("arrow"))), "4f970eb634c08746");
});

test("a wave with one arrow tower hashes as the Rust simulation does, tick by tick", () => {
  const rules = meadowRules();
  const m = rules.maps.meadow;
  const path = new sim.Path(m);
  const t = { id: 1, owner: "a", seat: 0, kind: "arrow", level: 0, x: 3, y: 1, kills: 0, reach: [], readyAt: 1 };
  sim.aim(t, rules, path);
  const world = { gold: [100, 100], lives: 10, towers: new Map([[1, t]]) };
  const b = new sim.Battle(rules, m, 2, "hard", 42n);
  const want = [
    [1, "361378a848c4cc7a"],
    [50, "f0711752a2e8c787"],
    [100, "74875a52ddac4f1c"],
    [200, "cb72ab44b4e76be0"],
    [400, "0b4f540092199597"],
    [800, "adc8d146a73d0853"],
  ];
  for (const [tick, hash] of want) {
    b.advanceTo(tick, rules, path, world);
    assert.equal(b.hash(world), hash, `tick ${tick}`);
  }
});

test("64-bit integers in event JSON arrive exact; digits inside strings are left alone", () => {
  const json = '{"seed":13679457532755275413,"wave":2,"name":"x: 12345678901234567}\\"","neg":-9007199254740993}';
  const quoted = sim.quoteBigIntegers(json);
  const v = JSON.parse(quoted);
  assert.equal(v.seed, "13679457532755275413");
  assert.equal(v.wave, 2);
  assert.equal(v.name, 'x: 12345678901234567}"');
  assert.equal(v.neg, "-9007199254740993");
});
