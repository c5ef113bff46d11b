// A web bundle run by Node: the bundle's own translator.mjs, onnxruntime-web and SentencePiece
// (the WebAssembly builds the page loads), driven by ekd_edge/runtime/web_engine.py.
//
//   node node_runner.mjs BUNDLE [THREADS]
//
// One JSON request per stdin line, one JSON answer per stdout line:
//   {"op": "encode", "texts": [...], "truncate": true}       -> {"ids": [[...], ...]}
//   {"op": "generate", "ids": [[...]], "max_new_tokens": N}  -> {"ids": [[...]], "seconds": [...]}
//   {"op": "decode", "ids": [[...], ...]}                    -> {"texts": [...]}
// A request that fails answers {"error": "..."}; the process stays up.
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [bundle, threadsArg] = process.argv.slice(2);
const root = resolve(bundle);
const settings = JSON.parse(await readFile(join(root, "web.json"), "utf8"));
const load = (rel) => import(pathToFileURL(join(root, rel)).href);
const ort = await load(settings.runtime.onnxruntime);
const { SentencePieceProcessor } = await load(settings.runtime.sentencepiece);
const { WebTranslator } = await load(settings.translator);
const translator = await WebTranslator.load(async (name) => new Uint8Array(await readFile(join(root, name))),
  { ort, SentencePieceProcessor, threads: Number(threadsArg || 1) });

async function answer(request) {
  if (request.op === "encode") {
    return { ids: request.texts.map((text) => translator.encode(text, request.truncate !== false)) };
  }
  if (request.op === "decode") return { texts: request.ids.map((ids) => translator.decode(ids)) };
  if (request.op === "generate") {
    const ids = [];
    const seconds = [];
    for (const source of request.ids) {
      const start = performance.now();
      ids.push(await translator.generate(source, request.max_new_tokens));
      seconds.push((performance.now() - start) / 1000);
    }
    return { ids, seconds };
  }
  throw new Error(`unknown op ${JSON.stringify(request.op)}`);
}

process.stdout.write(JSON.stringify({ ready: true }) + "\n");
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  let reply;
  try {
    reply = await answer(JSON.parse(line));
  } catch (error) {
    reply = { error: String(error && error.message ? error.message : error) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
}
