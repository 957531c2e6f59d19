// English and European Portuguese. The browser's languages choose (any `pt`, pt-BR included,
// gets pt-PT); the person can switch, and the choice is remembered on this device.

import en from './i18n/en.js';
import ptPT from './i18n/pt-PT.js';

export const LANGUAGES = { en: { name: 'English', dict: en }, 'pt-PT': { name: 'Português', dict: ptPT } };
const KEY = 'suroga.lang';
let lang = 'en';
const listeners = new Set();

/** The language for a list of BCP 47 tags (navigator.languages): pt* -> pt-PT, else en. */
export function pick(tags) {
  for (const tag of tags || []) {
    const t = String(tag).toLowerCase();
    if (t.startsWith('pt')) return 'pt-PT';
    if (t.startsWith('en')) return 'en';
  }
  return 'en';
}

export function initLanguage() {
  let saved = null;
  try {
    saved = localStorage.getItem(KEY);
  } catch (e) {
    saved = null;
  }
  setLanguage(saved && LANGUAGES[saved] ? saved : pick(navigator.languages || [navigator.language]), false);
}

export function language() {
  return lang;
}

export function setLanguage(next, remember = true) {
  lang = LANGUAGES[next] ? next : 'en';
  document.documentElement.lang = lang;
  if (remember) {
    try {
      localStorage.setItem(KEY, lang);
    } catch (e) {
      // Private mode: the choice lasts for this page only.
    }
  }
  for (const f of listeners) f(lang);
}

export function onLanguage(f) {
  listeners.add(f);
  return () => listeners.delete(f);
}

/** t('key', {name: 'Ana'}) -> the text in the current language ({name} placeholders filled). */
export function t(key, vars) {
  const text = LANGUAGES[lang].dict[key] ?? en[key] ?? key;
  return vars ? text.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m)) : text;
}

export function formatDate(d) {
  return new Intl.DateTimeFormat(lang, { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric' }).format(d);
}

export function formatTime(d) {
  return new Intl.DateTimeFormat(lang, { hour: '2-digit', minute: '2-digit' }).format(d);
}

/** "Tue, 3 Dec 2026, 10:00–11:00" for a session. */
export function formatSlot(start, end) {
  return `${formatDate(start)}, ${formatTime(start)}–${formatTime(end)}`;
}
