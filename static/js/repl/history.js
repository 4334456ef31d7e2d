// The REPL's input history: the session's stored REPL inputs merged with this browser's own.
//
// Entries come from three places, all merged the same way:
//   - the session's executions over REST at page load (inputs typed in any browser or the CLI);
//   - `execution` messages of the session subscription while the page is open (live);
//   - localStorage (`vm-system.history.<session id>`), shared by this browser's tabs: re-read on
//     the `storage` event and on the first ↑ of a recall.
// Each entry is `{text, at}` (ms since the epoch). The same text is kept once, at its latest
// time (an input run again moves to the end, like Node's `removeHistoryDuplicates`), and the
// newest `max` entries are kept.

export class InputHistory {
  constructor(key, max = 500) {
    this.key = key;
    this.max = max;
    this.times = new Map(); // text → latest time
    this.items = []; // texts, oldest first
    this.index = 0; // == items.length when not browsing
    this.draft = "";
    this.merge(this.readStorage());
    window.addEventListener("storage", (e) => {
      if (e.key === this.key) this.merge(this.readStorage());
    });
  }

  readStorage() {
    try {
      const list = JSON.parse(localStorage.getItem(this.key) || "[]");
      if (!Array.isArray(list)) return [];
      // Older pages stored bare strings, oldest first: keep that order.
      return list
        .map((e, i) => (typeof e === "string" ? { text: e, at: i } : e))
        .filter((e) => e && typeof e.text === "string" && typeof e.at === "number");
    } catch {
      return [];
    }
  }

  writeStorage() {
    try {
      localStorage.setItem(this.key, JSON.stringify(this.items.map((text) => ({ text, at: this.times.get(text) }))));
    } catch {
      /* storage full or disabled: the history stays in memory */
    }
  }

  /** Merge `entries` ({text, at}); the entry being shown stays the one shown. */
  merge(entries) {
    let changed = false;
    for (const { text, at } of entries) {
      if (!text || !text.trim()) continue;
      const known = this.times.get(text);
      if (known === undefined || at > known) {
        this.times.set(text, at);
        changed = true;
      }
    }
    if (!changed) return;
    const browsing = this.index < this.items.length ? this.items[this.index] : null;
    this.items = [...this.times.keys()].sort((a, b) => this.times.get(a) - this.times.get(b));
    if (this.items.length > this.max) {
      for (const text of this.items.slice(0, this.items.length - this.max)) this.times.delete(text);
      this.items = this.items.slice(-this.max);
    }
    const at = browsing === null ? -1 : this.items.indexOf(browsing);
    this.index = at >= 0 ? at : this.items.length;
  }

  /** An input was just run here: remember it (and tell this browser's other tabs). */
  add(text, at = Date.now()) {
    this.merge([{ text, at: Math.max(at, (this.times.get(this.items[this.items.length - 1]) ?? 0) + 1) }]);
    this.writeStorage();
    this.index = this.items.length;
    this.draft = "";
  }

  /** Is `text` the recalled entry, unedited? */
  browsing(text) {
    return this.index < this.items.length && this.items[this.index] === text;
  }

  /** The entry before the one shown (`current` is what the editor holds), or null. */
  back(current) {
    if (this.index >= this.items.length) {
      this.merge(this.readStorage()); // another tab may have added entries
      this.index = this.items.length;
      this.draft = current;
    }
    if (this.index === 0) return null;
    this.index -= 1;
    return this.items[this.index];
  }

  /** The entry after the one shown, the draft past the newest, or null. */
  forward() {
    if (this.index >= this.items.length) return null;
    this.index += 1;
    return this.index === this.items.length ? this.draft : this.items[this.index];
  }
}
