/**
 * The names the served model answers to (`--served-model-name`, repeatable: the first is its
 * name, the rest aliases) and how a requested name is matched against them. Ollama's clients
 * name models `model:tag` with the tag `latest` implied, so `gemma2` and `gemma2:latest` are
 * the same name here too, on every route.
 */

/** `name` with Ollama's implied tag: `gemma2` → `gemma2:latest` (a `:` before the last `/` is a registry port, not a tag). */
export function withTag(name: string): string {
  const base = name.slice(name.lastIndexOf('/') + 1);
  return base.includes(':') ? name : `${name}:latest`;
}

/** The served name that `requested` means, or undefined when it names none of them. */
export function matchModelName(served: readonly string[], requested: string): string | undefined {
  if (served.includes(requested)) return requested;
  const tagged = withTag(requested);
  return served.find((name) => withTag(name) === tagged);
}
