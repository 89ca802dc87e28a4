/**
 * A typed array reused from step to step: `get(n)` gives one of at least n elements, grown (to
 * at least double) when n outgrows it; what it held before is unspecified. Per-step code binds it
 * with the step's shape (a run reads only the elements its shape says), so nothing is allocated
 * while the batch does not grow.
 */
export function reusable<T extends { readonly length: number }>(make: (n: number) => T): (n: number) => T {
  let array = make(0);
  return (n) => (array.length >= n ? array : (array = make(Math.max(n, 2 * array.length))));
}
