// Stands in for Node's "fs" and "buffer" in a browser: SentencePiece's module imports both at the
// top but only uses them under Node. A page maps the two names here with an import map.
export const Buffer = globalThis.Buffer;
export default {};
