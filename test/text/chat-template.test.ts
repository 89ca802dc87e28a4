import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTokenizerConfigJson } from '../../src/checkpoint/tokenizer-json.ts';
import { createChatTemplate, DEFAULT_GEMMA_CHAT_TEMPLATE, foldSystemIntoUser, loadChatTemplate, type ChatTemplate } from '../../src/engine/chat-template.ts';
import { CheckpointError, InvalidRequestError } from '../../src/errors.ts';

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
