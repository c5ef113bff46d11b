// Drives the demo page in headless Chromium (Debian's chromium, through playwright-core): opens it
// once per thread count, waits for the model, and translates the given texts on the page.
//
//   node drive.mjs URL REQUEST.json RESULT.json
//
// REQUEST: {"texts": [...], "threads": [1, 2], "warmup": 3, "max_new_tokens": 128, "encode": false,
//           "chromium": "/usr/bin/chromium"}
// RESULT:  {"browser": "...", "runs": [{"threads", "info", "translations": [{"text", "ids", "ms"}],
//           "encoded": [[...]] (with "encode")}]}
import { readFile, writeFile } from "node:fs/promises";
import { chromium } from "playwright-core";

const [url, requestPath, resultPath] = process.argv.slice(2);
const request = JSON.parse(await readFile(requestPath, "utf8"));
// A fresh profile each time (playwright's own temporary one). No network beyond this machine:
// the flags keep Chromium from calling home in the background.
const browser = await chromium.launch({
  executablePath: request.chromium || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const version = browser.version();
const runs = [];
try {
  for (const threads of request.threads || [1]) {
    const page = await browser.newPage();
    const problems = [];
    page.on("pageerror", (error) => problems.push(String(error)));
    page.on("requestfailed", (failed) => problems.push(`request failed: ${failed.url()}`));
    await page.goto(`${url}?threads=${threads}`);
    let info;
    try {
      info = await page.evaluate(() => window.ekd.ready);
    } catch (error) {
      throw new Error(`the page did not load its model: ${error.message} ${problems.join("; ")}`);
    }
    const run = await page.evaluate(async ({ texts, warmup, maxNewTokens, encode }) => {
      for (const text of texts.slice(0, warmup)) await window.ekd.translate(text, maxNewTokens);
      const translations = [];
      for (const text of texts) translations.push(await window.ekd.translate(text, maxNewTokens));
      const encoded = encode ? await Promise.all(texts.map((text) => window.ekd.encode(text))) : undefined;
      return { translations, encoded };
    }, { texts: request.texts, warmup: request.warmup || 0, maxNewTokens: request.max_new_tokens, encode: !!request.encode });
    runs.push({ threads, info, problems, ...run });
    await page.close();
  }
} finally {
  await browser.close();
}
await writeFile(resultPath, JSON.stringify({ browser: `chromium ${version}`, runs }));
