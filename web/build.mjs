// `npm run bundle`: src/main.ts -> ../query-service/web/dist/app.js (one
// minified ES module), index.html and app.css copied beside it. Deterministic:
// no source maps, no timestamps, no absolute paths, so two builds of the same
// source are byte-identical (CI rebuilds and compares with git).
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

const out = "../query-service/web/dist";
mkdirSync(out, { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  outfile: `${out}/app.js`,
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  platform: "browser",
  legalComments: "none",
  charset: "utf8",
  sourcemap: false,
  logLevel: "warning",
});
copyFileSync("index.html", `${out}/index.html`);
copyFileSync("src/app.css", `${out}/app.css`);
