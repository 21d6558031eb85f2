declare module 'edgeserve:handler/output@0.1.5' {
  /**
   * Whether the current request is streamed. When it is not, `send`
   * drops its chunk, so a handler may skip building chunks.
   */
  export function streaming(): boolean;
  /**
   * Sends `chunk` to the client now. Returns false once nobody is
   * listening (the client hung up): the handler should stop generating
   * and return; the host discards what it returns. Call it once per
   * generated token, so a cancelled request stops at the next token.
   */
  export function send(chunk: TextChunk): boolean;
  /**
   * A piece of one generated text.
   */
  export interface TextChunk {
    /**
     * Which input element (prompt) this continues, counted from 0.
     */
    index: number,
    /**
     * Token ids generated since the previous chunk of this element.
     * Empty only in a last chunk that flushes held-back text.
     */
    tokens: Uint32Array,
    /**
     * Natural-log probability of each of `tokens`, when the request
     * asked for them; empty otherwise.
     */
    logprobs: Float32Array,
    /**
     * The text these tokens completed: whole UTF-8 characters only, so
     * it may be empty while a character (or a possible stop sequence)
     * is still incomplete, and carry held-back text later.
     */
    text: string,
  }
}
