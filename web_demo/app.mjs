// The demo page: loads the web bundle served at /bundle/ and translates on this page.
// window.ekd is what the browser tests and the benchmark drive (web_demo/drive.mjs).
const BUNDLE = "/bundle/";

const fetchBytes = async (name) => {
  const response = await fetch(BUNDLE + name);
  if (!response.ok) throw new Error(`${BUNDLE}${name}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
};

// ?threads=N; by default as many as the page may use (one without cross-origin isolation).
function threadCount() {
  const asked = Number(new URLSearchParams(location.search).get("threads"));
  if (asked > 0) return asked;
  return self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
}

const megabytes = (bytes) => `${(bytes / 1e6).toFixed(2)} MB`;

async function load() {
  const started = performance.now();
  const settings = await (await fetch(BUNDLE + "web.json")).json();
  const manifest = await (await fetch(BUNDLE + "manifest.json")).json();
  const ort = await import(BUNDLE + settings.runtime.onnxruntime);
  const { SentencePieceProcessor } = await import(BUNDLE + settings.runtime.sentencepiece);
  const { WebTranslator } = await import(BUNDLE + settings.translator);
  const threads = threadCount();
  const translator = await WebTranslator.load(fetchBytes, { ort, SentencePieceProcessor, threads });
  return {
    translator,
    info: {
      crossOriginIsolated: self.crossOriginIsolated, threads, variant: manifest.variant,
      payload: manifest.payload, runtime: manifest.web_runtime, load_ms: performance.now() - started,
      userAgent: navigator.userAgent,
    },
  };
}

const loaded = load();
window.ekd = {
  ready: loaded.then(({ info }) => info),
  async translate(text, maxNewTokens) {
    const { translator } = await loaded;
    const start = performance.now();
    const result = await translator.translate(text, maxNewTokens);
    return { ...result, ms: performance.now() - start };
  },
  async encode(text) {
    return (await loaded).translator.encode(text);
  },
};

const $ = (id) => document.getElementById(id);
loaded.then(({ info }) => {
  const payload = info.payload;
  $("status").textContent = `ready in ${(info.load_ms / 1000).toFixed(1)} s · ${info.variant} · ` +
    `${info.threads} thread${info.threads > 1 ? "s" : ""}` +
    (info.crossOriginIsolated ? "" : " (not cross-origin isolated: one thread only)");
  $("facts").textContent = `model ${megabytes(payload.model_bytes)} + runtime ${megabytes(payload.runtime_bytes)} ` +
    `(onnxruntime-web ${info.runtime["onnxruntime-web"]}, SentencePiece WebAssembly)`;
  $("translate").disabled = false;
}, (error) => {
  $("status").textContent = `cannot load the model: ${error.message}`;
});

$("translate").addEventListener("click", async () => {
  const lines = $("source").value.split("\n").filter((line) => line.trim());
  $("translate").disabled = true;
  const out = [];
  let total = 0;
  for (const line of lines) {
    const { text, ms } = await window.ekd.translate(line);
    out.push(text);
    total += ms;
    $("output").textContent = out.join("\n");
  }
  $("timing").textContent = lines.length ? `${(total / lines.length).toFixed(0)} ms per sentence ` +
    `(${lines.length} sentence${lines.length > 1 ? "s" : ""})` : "";
  $("translate").disabled = false;
});
