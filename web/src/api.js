// The service's REST API (/api/v1), with the caller's bearer token when there is one.
// Errors are RFC 9457 problem+json: an ApiError carries the status and the problem body.

import { bearer } from './auth.js';

export const API = '/api/v1';

export class ApiError extends Error {
  constructor(status, problem, headers) {
    super((problem && problem.detail) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.retryAfter = Number(headers && headers.get('retry-after')) || null;
  }
}

/**
 * api('GET', '/bookings') -> parsed JSON (null for 204).
 * options: body (JSON), auth (default true: send the bearer token if signed in), headers, keepalive.
 */
export async function api(method, path, options = {}) {
  const headers = { Accept: 'application/json', ...(options.headers || {}) };
  if (options.auth !== false) {
    const token = await bearer();
    if (token) headers.Authorization = `Bearer ${token}`;
  }
  const init = { method, headers, cache: 'no-store', keepalive: !!options.keepalive };
  if (options.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(options.body);
  }
  let res;
  try {
    res = await fetch(API + path, init);
  } catch (e) {
    throw new ApiError(0, { detail: 'network' });
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (e) {
    json = null;
  }
  if (!res.ok) throw new ApiError(res.status, json, res.headers);
  return json;
}
