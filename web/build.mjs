// Bundles the client into dist/ (app.js, minified, with its source map) and
// copies the page and its style. Fails when the bundle passes its budget.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, statSync } from "node:fs";

const BUDGET = 300 * 1024;
mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/app.ts"],
  bundle: true,
  minify: true,
  sourcemap: true,
  format: "esm",
  target: ["chrome110", "firefox110", "safari16"],
  outfile: "dist/app.js",
  legalComments: "none",
});
for (const f of ["index.html", "style.css"]) copyFileSync(`static/${f}`, `dist/${f}`);
const size = statSync("dist/app.js").size;
console.log(`dist/app.js: ${(size / 1024).toFixed(1)} KB minified (budget ${BUDGET / 1024} KB)`);
if (size > BUDGET) {
  console.error("the bundle is over its budget");
  process.exit(1);
}
