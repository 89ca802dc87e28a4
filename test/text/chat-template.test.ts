import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTokenizerConfigJson } from '../../src/checkpoint/tokenizer-json.ts';
import { createChatTemplate, DEFAULT_GEMMA_CHAT_TEMPLATE, foldSystemIntoUser, loadChatTemplate, type ChatTemplate } from '../../src/engine/chat-template.ts';
import { CheckpointError, InvalidRequestError } from '../../src/errors.ts';
import { pythonStrip } from '../../src/engine/template-python.ts';

const dir = mkdtempSync(join(tmpdir(), 'chat-template-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const configPath = join(dir, 'tokenizer_config.json');
writeFileSync(configPath, JSON.stringify(buildTokenizerConfigJson()));

const fromCheckpoint = loadChatTemplate(configPath);
const fallback = loadChatTemplate(null);
const gen = { addGenerationPrompt: true };

for (const [label, tpl] of [['checkpoint template', fromCheckpoint], ['default template', fallback]] as [string, ChatTemplate][]) {
  t.test(`${label}: one user message renders the Gemma prompt exactly`, async (t) => {
    t.equal(tpl.renderChat([{ role: 'user', content: 'Hi' }], gen), '<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n');
  });
}

t.test('assistant turns are rendered as model, content is trimmed', async (t) => {
  const out = fromCheckpoint.renderChat([
    { role: 'user', content: ' Hi\n' },
    { role: 'assistant', content: 'Hello!' },
    { role: 'user', content: 'More' },
  ], { addGenerationPrompt: false });
  t.equal(out, '<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nMore<end_of_turn>\n');
});

t.test('a system message the template rejects is prepended to the first user turn', async (t) => {
  const out = fromCheckpoint.renderChat([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }], gen);
  t.equal(out, '<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n');
  t.same(foldSystemIntoUser([{ role: 'system', content: 'S' }]), [{ role: 'user', content: 'S' }]);
});

t.test('a template that accepts system messages keeps them', async (t) => {
  const tpl = createChatTemplate('{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}');
  t.equal(tpl.renderChat([{ role: 'system', content: 'S' }, { role: 'user', content: 'U' }], gen), '[system]S[user]U');
});

t.test('roles that do not alternate are a 400 on messages with the template\'s message', async (t) => {
  const attempt = (): string => fromCheckpoint.renderChat([{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }], gen);
  t.throws(attempt, InvalidRequestError);
  try {
    attempt();
  } catch (e) {
    const err = e as InvalidRequestError;
    t.equal(err.status, 400);
    t.equal(err.param, 'messages');
    t.match(err.message, /Conversation roles must alternate user\/assistant/);
  }
  t.throws(() => fromCheckpoint.renderChat([{ role: 'assistant', content: 'a' }], gen), InvalidRequestError);
});

t.test('a chat_template that does not parse is a checkpoint error', async (t) => {
  t.throws(() => createChatTemplate('{% for %}'), CheckpointError);
  t.ok(DEFAULT_GEMMA_CHAT_TEMPLATE.startsWith('{{ bos_token }}'));
});

t.test('trim and strip use Python\'s whitespace set, as Hugging Face renders them', async (t) => {
  t.equal(pythonStrip('\u0085\u001c\u001f \t\u3000x y\u2028\n'), 'x y', 'U+0085, U+001C–U+001F are whitespace to Python');
  t.equal(pythonStrip('\ufeffx\ufeff'), '\ufeffx\ufeff', 'U+FEFF is not');
  t.equal(pythonStrip('  x  ', 'left'), 'x  ');
  t.equal(pythonStrip('xxaxx', 'right', 'x'), 'xxa');
  t.equal(pythonStrip('🎉a🎉', 'both', '🎉'), 'a', 'chars may be astral');
  const tpl = createChatTemplate([
    '{{ messages[0].content | trim }}|{{ messages[0].content.strip() }}|{{ messages[0].content.lstrip() }}|',
    '{{ messages[0].content.rstrip() }}|{{ "xxayy".strip("xy") }}|{{ {"k": messages[0].content | trim}["k"] }}|',
    '{% for m in messages %}{{ m.content | trim | length }}{% endfor %}',
  ].join(''));
  const c = '\u0085 \ufeffhi\u001c ';
  t.equal(tpl.renderChat([{ role: 'user', content: c }], gen), '\ufeffhi|\ufeffhi|\ufeffhi\u001c |\u0085 \ufeffhi|a|\ufeffhi|3');
  t.throws(() => createChatTemplate('{{ messages | trim }}').renderChat([{ role: 'user', content: 'x' }], gen), InvalidRequestError, 'trim of a list is the template failing');
});

t.test('system messages fold into the next user turn, each stripped, blank ones dropped', async (t) => {
  t.same(foldSystemIntoUser([
    { role: 'system', content: ' A.\n' }, { role: 'system', content: '\u0085 ' }, { role: 'system', content: 'B.' }, { role: 'user', content: '\n Hi ' },
  ]), [{ role: 'user', content: 'A.\n\nB.\n\nHi' }]);
});

t.test('chat_template_kwargs are template variables; the renderer\'s own win', async (t) => {
  const tpl = createChatTemplate('{{ bos_token }}{% if enable_thinking %}T{% endif %}{{ greeting }} {{ messages[0].content }}');
  t.equal(tpl.renderChat([{ role: 'user', content: 'u' }], { addGenerationPrompt: false, kwargs: { greeting: 'hey', enable_thinking: true } }), '<bos>They u');
  t.equal(tpl.renderChat([{ role: 'user', content: 'u' }], { addGenerationPrompt: false, kwargs: { bos_token: 'X' } }), '<bos> u');
});

t.test('continue_final_message leaves the last message open, as transformers cuts it', async (t) => {
  const open = (content: string): string => fromCheckpoint.renderChat([{ role: 'user', content: 'Q' }, { role: 'assistant', content }], { addGenerationPrompt: false, continueFinalMessage: true });
  const head = '<bos><start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\n';
  t.equal(open('Sure: 1.'), `${head}Sure: 1.`);
  t.equal(open('The answer is '), `${head}The answer is`, 'trailing space the template trimmed is not restored');
  const keeps = createChatTemplate('{% for m in messages %}[{{ m.content }}]{% endfor %}');
  t.equal(keeps.renderChat([{ role: 'assistant', content: 'a ' }], { addGenerationPrompt: false, continueFinalMessage: true }), '[a ', 'kept where the template keeps it');
  const hides = createChatTemplate('{% for m in messages %}[{{ m.role }}]{% endfor %}');
  t.throws(() => hides.renderChat([{ role: 'assistant', content: 'zzz' }], { addGenerationPrompt: false, continueFinalMessage: true }), InvalidRequestError);
});

t.test('--chat-template: a Jinja file or a tokenizer_config.json-like JSON replaces the checkpoint\'s', async (t) => {
  const jinja = join(dir, 'override.jinja');
  writeFileSync(jinja, '{{ bos_token }}J:{{ messages[0].content }}');
  t.equal(loadChatTemplate(configPath, jinja).renderChat([{ role: 'user', content: 'x' }], gen), '<bos>J:x');
  const json = join(dir, 'override.json');
  writeFileSync(json, JSON.stringify({ chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D:{{ messages[0].content }}' }] }));
  t.equal(loadChatTemplate(configPath, json).renderChat([{ role: 'user', content: 'x' }], gen), 'D:x');
  const noTemplate = join(dir, 'no-template.json');
  writeFileSync(noTemplate, JSON.stringify({ bos_token: '<bos>' }));
  t.throws(() => loadChatTemplate(configPath, noTemplate), CheckpointError);
  t.throws(() => loadChatTemplate(configPath, join(dir, 'missing.jinja')), CheckpointError);
});
