// The seeds' kind of RAG chain against one gemma-serve, with only the base URL changed:
// split → embed → an in-memory vector store → retrieve → chat, once with LangChain's Ollama
// classes (OllamaEmbeddings, ChatOllama) and once with its OpenAI ones (OpenAIEmbeddings,
// ChatOpenAI). The model is tiny and random, so the answer is gibberish; what is checked is that
// every call succeeds and that retrieval works on the served model's embeddings: a chunk's own
// text finds that chunk first (identical input, identical vector).
import t, { type Test } from 'tap';
import { ChatOllama, OllamaEmbeddings } from '@langchain/ollama';
import { ChatOpenAI, OpenAIEmbeddings } from '@langchain/openai';
import { RecursiveCharacterTextSplitter } from '@langchain/textsplitters';
import { Document, type DocumentInterface } from '@langchain/core/documents';
import type { EmbeddingsInterface } from '@langchain/core/embeddings';
import type { BaseChatModel } from '@langchain/core/language_models/chat_models';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { RunnablePassthrough, RunnableSequence } from '@langchain/core/runnables';
import { VectorStore } from '@langchain/core/vectorstores';
import { startTinyServer } from './tiny-server.ts';

const { baseURL, model } = await startTinyServer('rag', { maxPositions: 1024 });

/** The smallest in-memory vector store: cosine similarity over every stored vector. */
class MemoryStore extends VectorStore {
  private readonly rows: { vector: number[]; doc: DocumentInterface }[] = [];

  _vectorstoreType(): string {
    return 'memory';
  }

  async addVectors(vectors: number[][], documents: DocumentInterface[]): Promise<void> {
    vectors.forEach((vector, i) => this.rows.push({ vector, doc: documents[i]! }));
  }

  async addDocuments(documents: DocumentInterface[]): Promise<void> {
    await this.addVectors(await this.embeddings.embedDocuments(documents.map((d) => d.pageContent)), documents);
  }

  async similaritySearchVectorWithScore(query: number[], k: number): Promise<[DocumentInterface, number][]> {
    const cos = (a: number[], b: number[]): number => {
      let dot = 0, na = 0, nb = 0;
      for (let i = 0; i < a.length; i++) { dot += a[i]! * b[i]!; na += a[i]! * a[i]!; nb += b[i]! * b[i]!; }
      return dot / Math.sqrt(na * nb);
    };
    return this.rows.map((r): [DocumentInterface, number] => [r.doc, cos(query, r.vector)]).sort((a, b) => b[1] - a[1]).slice(0, k);
  }
}

const TEXT = [
  'Gemma 2 is a family of open models. It comes in sizes of 2, 9 and 27 billion parameters.',
  'Its layers alternate between sliding-window attention over 4096 positions and global attention.',
  'Logits are soft-capped: attention scores at 50 and final logits at 30, through a tanh.',
  'The tokenizer has 256,000 pieces with byte fallback, and chat turns end with <end_of_turn>.',
  'gemma-serve exports the model to ONNX and runs it with ONNX Runtime on CPUs and CUDA GPUs.',
].join('\n\n');

async function ragChain(t: Test, embeddings: EmbeddingsInterface, llm: BaseChatModel): Promise<void> {
  const splitter = new RecursiveCharacterTextSplitter({ chunkSize: 120, chunkOverlap: 0 });
  const chunks = await splitter.splitDocuments([new Document({ pageContent: TEXT, metadata: { source: 'gemma2.md' } })]);
  t.ok(chunks.length >= 4, `${chunks.length} chunks`);
  const store = new MemoryStore(embeddings, {});
  await store.addDocuments(chunks);
  // A chunk's own text retrieves that chunk first.
  for (const chunk of chunks) {
    const [top] = await store.similaritySearch(chunk.pageContent, 1);
    t.equal(top?.pageContent, chunk.pageContent, `"${chunk.pageContent.slice(0, 30)}…" finds itself`);
  }
  const retriever = store.asRetriever(2);
  const prompt = ChatPromptTemplate.fromMessages([
    ['system', 'Answer from this context only:\n{context}'],
    ['human', '{question}'],
  ]);
  const chain = RunnableSequence.from([
    { context: retriever.pipe((docs: DocumentInterface[]) => docs.map((d) => d.pageContent).join('\n')), question: new RunnablePassthrough() },
    prompt,
    llm,
    new StringOutputParser(),
  ]);
  const answer: unknown = await chain.invoke('How are the logits capped?');
  t.type(answer, 'string', 'the chain answers with text');
}

t.test('LangChain with the Ollama classes: OllamaEmbeddings + ChatOllama', async (t) => {
  await ragChain(t, new OllamaEmbeddings({ baseUrl: baseURL, model }), new ChatOllama({ baseUrl: baseURL, model, numPredict: 8 }));
});

t.test('LangChain with the OpenAI classes: OpenAIEmbeddings + ChatOpenAI', async (t) => {
  const configuration = { baseURL: `${baseURL}/v1` };
  await ragChain(t, new OpenAIEmbeddings({ model, apiKey: 'none', configuration }), new ChatOpenAI({ model, apiKey: 'none', configuration, maxTokens: 8, maxRetries: 0 }));
});
