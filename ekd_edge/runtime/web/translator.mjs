// A web bundle at run time: SentencePiece (WebAssembly) + the encoder and merged decoder graphs
// (onnxruntime-web) + greedy search, in any JavaScript host. The page and the Node runner that the
// export's gates use both load this very file from the bundle, so what is gated is what a page runs.
//
// The host passes in what differs between a browser and Node: how bundle files are read, the
// onnxruntime module, and SentencePiece's processor class.

const SPIECE_UNDERLINE = "\u2581";

export class WebTranslator {
  static async load(read, { ort, SentencePieceProcessor, threads = 1 }) {
    const self = new WebTranslator();
    const text = async (name) => new TextDecoder().decode(await read(name));
    self.ort = ort;
    self.settings = JSON.parse(await text("web.json"));
    const s = self.settings;
    // A Map, not an object: a piece such as "constructor" must not find Object's prototype.
    const vocab = JSON.parse(await text(s.vocab));
    self.pieceToId = new Map(Object.entries(vocab));
    self.idToPiece = new Map([...self.pieceToId].map(([piece, id]) => [id, piece]));
    self.special = new Set(s.special_tokens.map((piece) => self.pieceToId.get(piece)));
    const escaped = s.special_tokens.map((piece) => piece.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    // a capturing group: split() keeps the special tokens between the segments
    self.specialPattern = new RegExp(`(${escaped.join("|")})`);
    self.spm = new SentencePieceProcessor();
    // load() takes a file path (Node only); the model bytes work in every host.
    await self.spm._loadModel(await read(s.tokenizer));
    ort.env.wasm.numThreads = threads;
    const options = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
    self.encoder = await ort.InferenceSession.create(await read(s.encoder), options);
    self.decoder = await ort.InferenceSession.create(await read(s.decoder), options);
    self.pastNames = self.decoder.inputNames.filter((name) => name.startsWith("past_key_values."));
    return self;
  }

  // Model ids of one text, as MarianTokenizer(text, truncation=True, max_length=positions) gives them:
  // special tokens written in the text are cut out first and kept as tokens; a segment that starts
  // with a ">>xx<<" language code keeps the code as one token; SentencePiece splits the rest.
  encode(text, truncate = true) {
    const s = this.settings;
    const pieces = [];
    for (const segment of text.split(this.specialPattern)) {
      if (!segment) continue;
      if (s.special_tokens.includes(segment)) {
        pieces.push(segment);
        continue;
      }
      let rest = segment;
      const end = rest.startsWith(">>") ? rest.indexOf("<<") : -1;
      if (end !== -1) {
        pieces.push(rest.slice(0, end + 2));
        rest = rest.slice(end + 2);
      }
      pieces.push(...this.spm.encodePieces(rest));
    }
    let ids = pieces.map((piece) => this.pieceToId.get(piece) ?? s.unk_token_id);
    if (truncate && ids.length > s.max_positions - 1) ids = ids.slice(0, s.max_positions - 1);
    ids.push(s.eos_token_id);
    return ids;
  }

  // Text of model ids, as MarianTokenizer.decode(ids, skip_special_tokens=True) gives it.
  decode(ids) {
    const pieces = ids.filter((id) => !this.special.has(id)).map((id) => this.idToPiece.get(id) ?? "");
    return pieces.join("").replaceAll(SPIECE_UNDERLINE, " ").trim();
  }

  // Greedy output ids (no start token, no EOS), the loop transformers' generate runs for Marian:
  // the pad token is never chosen, and with a forced EOS the last allowed position ends the sentence.
  async generate(ids, maxNewTokens) {
    const ort = this.ort;
    const s = this.settings;
    maxNewTokens = maxNewTokens ?? s.max_new_tokens;   // null (from JSON) too
    const n = ids.length;
    const int64 = (values, dims) => new ort.Tensor("int64", BigInt64Array.from(values, BigInt), dims);
    const mask = int64(new Array(n).fill(1), [1, n]);
    const { last_hidden_state: hidden } = await this.encoder.run({ input_ids: int64(ids, [1, n]), attention_mask: mask });
    const empty = new ort.Tensor("float32", new Float32Array(0), [1, s.heads, 0, s.head_dim]);
    const past = Object.fromEntries(this.pastNames.map((name) => [name, empty]));
    const limit = Math.min(maxNewTokens, s.max_positions - 1);
    const out = [];
    let token = s.decoder_start_token_id;
    for (let step = 0; step < limit; step++) {
      if (step === limit - 1 && s.forced_eos_token_id !== null) break;
      const feed = {
        encoder_attention_mask: mask, input_ids: int64([token], [1, 1]), encoder_hidden_states: hidden,
        use_cache_branch: new ort.Tensor("bool", [step > 0], [1]), ...past,
      };
      const results = await this.decoder.run(feed);
      const logits = results.logits.data;
      const vocabSize = results.logits.dims[2];
      const row = logits.subarray(logits.length - vocabSize);
      let best = -1;
      let bestScore = -Infinity;
      for (let i = 0; i < vocabSize; i++) {
        if (i !== s.pad_token_id && row[i] > bestScore) {
          best = i;
          bestScore = row[i];
        }
      }
      token = best;
      if (token === s.eos_token_id) break;
      out.push(token);
      for (const name of this.pastNames) {
        // the cross-attention keys/values come from the first step only
        if (step > 0 && name.includes(".encoder.")) continue;
        past[name] = results[name.replace("past_key_values.", "present.")];
      }
    }
    return out;
  }

  async translate(text, maxNewTokens) {
    if (!text.trim()) return { text: "", ids: [] };
    const ids = await this.generate(this.encode(text), maxNewTokens);
    return { text: this.decode(ids), ids };
  }
}
