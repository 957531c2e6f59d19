// Client-side routes under /app/. The server answers every /app/* path with the same page, so a
// link such as /app/i/<code> or /app/bookings/<id> opens directly.

const ROUTES = [
  { name: 'home', re: /^\/app\/?$/ },
  { name: 'book', re: /^\/app\/book\/?$/ },
  { name: 'booking', re: /^\/app\/bookings\/([0-9a-fA-F-]{36})\/?$/, params: ['id'] },
  { name: 'guest', re: /^\/app\/i\/([A-Za-z0-9_-]{1,200})\/?$/, params: ['code'] },
];

export function match(pathname) {
  for (const r of ROUTES) {
    const m = r.re.exec(pathname);
    if (m) {
      const params = {};
      (r.params || []).forEach((p, i) => {
        params[p] = decodeURIComponent(m[i + 1]);
      });
      return { name: r.name, params };
    }
  }
  return { name: 'notfound', params: {} };
}

let onChange = () => {};

export function startRouter(render) {
  onChange = render;
  window.addEventListener('popstate', () => onChange(match(location.pathname)));
  // Same-origin links inside the app navigate without reloading the page.
  document.addEventListener('click', (e) => {
    const a = e.target.closest && e.target.closest('a[href]');
    if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || a.target) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || !url.pathname.startsWith('/app/')) return;
    e.preventDefault();
    navigate(url.pathname);
  });
  onChange(match(location.pathname));
}

export function navigate(pathname) {
  if (pathname !== location.pathname) history.pushState(null, '', pathname);
  onChange(match(pathname));
}
