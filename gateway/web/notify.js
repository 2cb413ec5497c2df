// @ts-check
// Notifications: permission is asked only when the user clicks the bell;
// then the service worker subscribes to Web Push if the server offers a
// VAPID key (GET /api/push/vapid-public-key), and the page shows local
// notifications for messages that arrive while it is hidden.

/** @param {string} b64 */
function urlBase64ToBytes(b64) {
  const pad = '='.repeat((4 - (b64.length % 4)) % 4);
  const raw = atob((b64 + pad).replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

/**
 * Asks for permission and subscribes. Returns a sentence for the user.
 * @param {import('./api.js').Api} api
 */
export async function enable(api) {
  if (!('Notification' in window)) return 'This browser has no notifications.';
  const permission = await Notification.requestPermission();
  if (permission !== 'granted') return 'Notifications are blocked.';
  if (!('serviceWorker' in navigator)) return 'Notifications on while Parley is open.';
  let registration;
  try {
    registration = await navigator.serviceWorker.register('/sw.js', { scope: '/' });
    await navigator.serviceWorker.ready;
  } catch {
    return 'Notifications on while Parley is open.';
  }
  let key;
  try {
    key = await api.get('/api/push/vapid-public-key');
  } catch {
    return 'Notifications on while Parley is open (this server has no push yet).';
  }
  const publicKey = key && (key.public_key || key.key || key.vapid_public_key);
  if (!publicKey || !('pushManager' in registration)) return 'Notifications on while Parley is open.';
  try {
    const sub = await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: urlBase64ToBytes(publicKey),
    });
    await api.post('/api/push-subscriptions', sub.toJSON());
    return 'Notifications on, also when Parley is closed.';
  } catch {
    return 'Notifications on while Parley is open (push subscription failed).';
  }
}

/** A local notification for a message, when the page is hidden. @param {string} title @param {string} body @param {number} convId */
export function show(title, body, convId) {
  if (!('Notification' in window) || Notification.permission !== 'granted' || !document.hidden) return;
  try {
    const n = new Notification(title, { body, tag: `conv-${convId}` });
    n.onclick = () => { window.focus(); n.close(); };
  } catch { /* some platforms allow notifications only from a service worker */ }
}
