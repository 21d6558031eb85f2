#!/usr/bin/env python3
"""Writes the `gpt2` example model: a tiny randomly-initialised GPT-2 and its test reference.

    pip install torch transformers tokenizers safetensors
    python3 plugins/gpt2/make_checkpoint.py

Real GPT-2 weights cannot be downloaded here, so this builds a model with the
GPT-2 architecture and file layout, small enough to commit:

* a byte-level BPE tokenizer (Hugging Face `tokenizers`, the GPT-2 scheme:
  bytes mapped to printable characters, GPT-2's pre-tokenization regex,
  merges by rank) trained on TEXT below, with the special token
  `<|endoftext|>`, saved as GPT-2's `vocab.json` + `merges.txt`;
* `transformers.GPT2LMHeadModel` with 2 layers, 4 heads, width 64 and 128
  positions, initialised with a fixed seed (not trained: the point is the
  architecture and bit-for-bit agreement with Hugging Face, not fluent text).
  Layer-norm parameters and biases, which GPT-2's initialisation sets to 1
  and 0, get small seeded perturbations so the reference test exercises them;
* `model.safetensors` with the standard GPT-2 names (`wte.weight`,
  `h.0.attn.c_attn.weight` in Conv1D `[in, out]` layout, …; the LM head is
  tied to `wte`), plus `config.json` (heads, epsilon, context length).

Outputs (everything is seeded, so reruns give the same files):

* examples/models/gpt2/1/{model.safetensors,config.json,vocab.json,merges.txt}
* tests/data/gpt2_reference.json: for each prompt, GPT2TokenizerFast's ids,
  the last-position logits from GPT2LMHeadModel, and a greedy continuation
  from `model.generate(do_sample=False)` (ids and decoded text); plus extra
  texts with their ids only, for tokenizer checks.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "examples" / "models" / "gpt2" / "1"
REFERENCE = REPO / "tests" / "data" / "gpt2_reference.json"
SEED = 0
VOCAB_SIZE = 1024
EOS = "<|endoftext|>"
GREEDY_TOKENS = 20
# Greedy continuations are compared token for token with the server's: a step
# whose best two logits are closer than this could flip under float32
# rounding differences, so the script refuses such a reference.
MIN_GREEDY_MARGIN = 1e-4

# The tokenizer's training text: the opening of Lewis Carroll's "Alice's
# Adventures in Wonderland" (1865, public domain).
TEXT = """\
Alice was beginning to get very tired of sitting by her sister on the bank, and
of having nothing to do: once or twice she had peeped into the book her sister
was reading, but it had no pictures or conversations in it, "and what is the use
of a book," thought Alice "without pictures or conversations?"

So she was considering in her own mind (as well as she could, for the hot day
made her feel very sleepy and stupid), whether the pleasure of making a
daisy-chain would be worth the trouble of getting up and picking the daisies,
when suddenly a White Rabbit with pink eyes ran close by her.

There was nothing so very remarkable in that; nor did Alice think it so very
much out of the way to hear the Rabbit say to itself, "Oh dear! Oh dear! I shall
be late!" (when she thought it over afterwards, it occurred to her that she
ought to have wondered at this, but at the time it all seemed quite natural);
but when the Rabbit actually took a watch out of its waistcoat-pocket, and
looked at it, and then hurried on, Alice started to her feet, for it flashed
across her mind that she had never before seen a rabbit with either a
waistcoat-pocket, or a watch to take out of it, and burning with curiosity, she
ran across the field after it, and fortunately was just in time to see it pop
down a large rabbit-hole under the hedge.

In another moment down went Alice after it, never once considering how in the
world she was to get out again.

The rabbit-hole went straight on like a tunnel for some way, and then dipped
suddenly down, so suddenly that Alice had not a moment to think about stopping
herself before she found herself falling down a very deep well.

Either the well was very deep, or she fell very slowly, for she had plenty of
time as she went down to look about her and to wonder what was going to happen
next. First, she tried to look down and make out what she was coming to, but it
was too dark to see anything; then she looked at the sides of the well, and
noticed that they were filled with cupboards and book-shelves; here and there
she saw maps and pictures hung upon pegs. She took down a jar from one of the
shelves as she passed; it was labelled "ORANGE MARMALADE", but to her great
disappointment it was empty: she did not like to drop the jar for fear of
killing somebody underneath, so managed to put it into one of the cupboards as
she fell past it.

"Well!" thought Alice to herself, "after such a fall as this, I shall think
nothing of tumbling down stairs! How brave they'll all think me at home! Why, I
wouldn't say anything about it, even if I fell off the top of the house!" (Which
was very likely true.)

Down, down, down. Would the fall never come to an end? "I wonder how many miles
I've fallen by this time?" she said aloud. "I must be getting somewhere near the
centre of the earth. Let me see: that would be four thousand miles down, I
think--" (for, you see, Alice had learnt several things of this sort in her
lessons in the schoolroom, and though this was not a very good opportunity for
showing off her knowledge, as there was no one to listen to her, still it was
good practice to say it over) "--yes, that's about the right distance--but then
I wonder what Latitude or Longitude I've got to?" (Alice had no idea what
Latitude was, or Longitude either, but thought they were nice grand words to
say.)

Presently she began again. "I wonder if I shall fall right through the earth!
How funny it'll seem to come out among the people that walk with their heads
downward! The Antipathies, I think--" (she was rather glad there was no one
listening, this time, as it didn't sound at all the right word) "--but I shall
have to ask them what the name of the country is, you know. Please, Ma'am, is
this New Zealand or Australia?" (and she tried to curtsey as she spoke--fancy
curtseying as you're falling through the air! Do you think you could manage
it?) "And what an ignorant little girl she'll think me for asking! No, it'll
never do to ask: perhaps I shall see it written up somewhere."

Down, down, down. There was nothing else to do, so Alice soon began talking
again. "Dinah'll miss me very much to-night, I should think!" (Dinah was the
cat.) "I hope they'll remember her saucer of milk at tea-time. Dinah my dear! I
wish you were down here with me! There are no mice in the air, I'm afraid, but
you might catch a bat, and that's very like a mouse, you know. But do cats eat
bats, I wonder?" And here Alice began to get rather sleepy, and went on saying
to herself, in a dreamy sort of way, "Do cats eat bats? Do cats eat bats?" and
sometimes, "Do bats eat cats?" for, you see, as she couldn't answer either
question, it didn't much matter which way she put it. She felt that she was
dozing off, and had just begun to dream that she was walking hand in hand with
Dinah, and saying to her very earnestly, "Now, Dinah, tell me the truth: did you
ever eat a bat?" when suddenly, thump! thump! down she came upon a heap of
sticks and dry leaves, and the fall was over. It was 1865, and the year's 12
months had 365 days.
"""

# Prompts with logits and a greedy continuation in the reference.
PROMPTS = [
    "Alice was beginning to get very tired of sitting by her sister",
    "Down, down, down. Would the fall never come to an end?",
    "The quick brown fox jumps over the lazy dog.",
    "",
]

# Texts whose token ids only are checked: contractions, digits, runs of
# spaces and newlines (the regex's `\s+(?!\S)`), non-ASCII letters, emoji
# (multi-byte UTF-8), punctuation runs and the special token.
TOKENIZER_TEXTS = [
    "Hello,  world!\n\nIt's 2024;   they'll say I'd've   gone. ",
    "naïve café — Ünïcödé 😀 東京 and 3.14159 or ४२",
    "tabs\tand\r\nnewlines\n\n\n  indented  \n",
    "'s 're 've 'm 'll 'd 'S 'RE",
    "a<|endoftext|>b <|endoftext|> c",
    "!!! ??? ... ---   ~~~",
    "",
]


def train_tokenizer(out: Path) -> None:
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(
        [TEXT], vocab_size=VOCAB_SIZE, min_frequency=1, special_tokens=[EOS]
    )
    tokenizer.save_model(str(out))


def perturb(model: GPT2LMHeadModel, generator: torch.Generator) -> None:
    """Small seeded offsets on the parameters GPT-2 initialises to 1 or 0."""
    with torch.no_grad():
        for name, param in model.transformer.named_parameters():
            if name.endswith(".bias") or ".ln_" in name or name.startswith("ln_f"):
                param.add_(0.05 * torch.randn(param.shape, generator=generator))


def main() -> None:
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    train_tokenizer(MODEL_DIR)
    # Loaded the way a GPT-2 checkpoint folder is: GPT-2's tokenizer class
    # over vocab.json + merges.txt.
    tokenizer = GPT2TokenizerFast.from_pretrained(str(MODEL_DIR))
    vocab = json.loads((MODEL_DIR / "vocab.json").read_text())
    eos_id = vocab[EOS]

    torch.manual_seed(SEED)
    config = GPT2Config(
        n_layer=2,
        n_head=4,
        n_embd=64,
        n_positions=128,
        vocab_size=len(vocab),
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    model = GPT2LMHeadModel(config)
    perturb(model, torch.Generator().manual_seed(SEED + 1))
    model.eval()

    # Standard GPT-2 names: the transformer's own parameters, no `transformer.`
    # prefix, no separate LM head (it is `wte`).
    weights = {
        name: tensor.detach().contiguous()
        for name, tensor in model.transformer.state_dict().items()
    }
    save_file(weights, str(MODEL_DIR / "model.safetensors"), metadata={"format": "pt"})
    config.to_json_file(str(MODEL_DIR / "config.json"))

    def ids_of(text: str) -> list[int]:
        return tokenizer(text)["input_ids"]

    prompts = []
    for text in PROMPTS:
        ids = ids_of(text)
        # An empty prompt starts from <|endoftext|>, as GPT-2's unconditional
        # samples do (the server does the same).
        context = ids or [eos_id]
        input_ids = torch.tensor([context])
        with torch.no_grad():
            logits = model(input_ids).logits[0, -1]
            out = model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=False,
                max_new_tokens=GREEDY_TOKENS,
                use_cache=True,
                pad_token_id=eos_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
        generated = out.sequences[0, len(context) :].tolist()
        for step, scores in enumerate(out.scores):
            top2 = torch.topk(scores[0], 2).values
            margin = float(top2[0] - top2[1])
            assert margin > MIN_GREEDY_MARGIN, f"{text!r}: greedy step {step} margin {margin}"
        if generated and generated[-1] == eos_id:
            generated = generated[:-1]
        prompts.append(
            {
                "text": text,
                "ids": ids,
                "logits": [round(float(x), 6) for x in logits],
                "greedy_ids": generated,
                "greedy_text": tokenizer.decode(generated),
            }
        )
        print(f"{text!r} -> {tokenizer.decode(generated)!r}")

    reference = {
        "model": "gpt2",
        "vocab_size": len(vocab),
        "eos_id": eos_id,
        "n_positions": config.n_positions,
        "greedy_tokens": GREEDY_TOKENS,
        "prompts": prompts,
        "tokenizer": [{"text": t, "ids": ids_of(t)} for t in TOKENIZER_TEXTS],
    }
    REFERENCE.write_text(json.dumps(reference, ensure_ascii=False, indent=1) + "\n")
    size = sum(p.stat().st_size for p in MODEL_DIR.iterdir())
    print(f"vocab {len(vocab)}, eos id {eos_id}; {MODEL_DIR} holds {size} bytes")


if __name__ == "__main__":
    main()
