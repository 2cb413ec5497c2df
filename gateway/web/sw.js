// Parley's service worker: shows Web Push notifications and opens the app
// when one is clicked. It caches nothing: the app needs its node anyway.

self.addEventListener('push', (event) => {
  let data = {};
  try { data = event.data ? event.data.json() : {}; } catch { data = { body: event.data && event.data.text() }; }
  const title = data.title || 'Parley';
  const body = data.body || data.preview || 'New message';
  const tag = data.conv_id ? `conv-${data.conv_id}` : 'parley';
  event.waitUntil(self.registration.showNotification(title, { body, tag, icon: '/web/icon.svg' }));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    if (windows.length > 0) return windows[0].focus();
    return self.clients.openWindow('/');
  })());
});
