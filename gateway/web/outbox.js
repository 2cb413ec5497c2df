// @ts-check
// The outbox: messages written but not yet acknowledged by the server
// (`sent`), persisted in IndexedDB so a reload or a crash loses none. Each
// is resent with its original client_msg_id until acknowledged, so the
// server stores it exactly once. Edits, deletes and reactions wait here
// too: they carry `op` ('edit' | 'delete' | 'react') and the target `seq`.

/**
 * @typedef {{client_msg_id: string, user_id: number, conv_id: number, body: string,
 *            created_at: number, failed?: string, reply_to?: number,
 *            op?: 'edit' | 'delete' | 'react', seq?: number, emoji?: string, remove?: boolean}} OutboxItem
 */

const DB = 'parley';
const STORE = 'outbox';

/** @returns {Promise<IDBDatabase>} */
function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => {
      const store = req.result.createObjectStore(STORE, { keyPath: 'client_msg_id' });
      store.createIndex('user', 'user_id');
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export class Outbox {
  constructor() {
    /** @type {Promise<IDBDatabase> | null} */
    this.db = null;
  }

  /**
   * @param {IDBTransactionMode} mode
   * @param {(store: IDBObjectStore) => IDBRequest} op
   */
  async run(mode, op) {
    if (!this.db) this.db = open();
    const db = await this.db;
    return new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = op(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
    });
  }

  /** @param {OutboxItem} item */
  put(item) { return this.run('readwrite', (s) => s.put(item)); }

  /** @param {string} id */
  remove(id) { return this.run('readwrite', (s) => s.delete(id)); }

  /** The user's pending messages, oldest first. @param {number} userId @returns {Promise<OutboxItem[]>} */
  async all(userId) {
    const items = await this.run('readonly', (s) => s.index('user').getAll(userId));
    return items.sort((a, b) => a.created_at - b.created_at);
  }
}
