/*
 * params.ts - context params on the wire and as keys.
 *
 * The gateway reads a context's params from the query string, coerces them
 * by their declared types and names invalidation targets by the canonical
 * (RFC 8785) form of the coerced values: members sorted, integers written as
 * integers (12.0 is 12). The client keys its store, its in-flight requests
 * and its subscriptions by the same canonical text, so that a target from a
 * mutation's `invalidate` list or an event matches exactly the bundles it
 * names. Once the gateway has answered, a subscription is keyed by the
 * params the bundle came back with (the gateway's own coercion: "5" and 5
 * are the same post).
 */

/** A JSON value as the canonical writer sees it. */
type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function canon(v: unknown): string {
  if (v === null || v === undefined) return "null";
  switch (typeof v) {
    case "boolean":
      return v ? "true" : "false";
    case "number":
      // JSON.stringify writes integral doubles without a fraction, like
      // RFC 8785 (ECMAScript number serialisation); non-finite is null.
      return Number.isFinite(v) ? JSON.stringify(v) : "null";
    case "bigint":
      return v.toString();
    case "string":
      return JSON.stringify(v);
    case "object": {
      if (Array.isArray(v)) return "[" + v.map(canon).join(",") + "]";
      const obj = v as Record<string, unknown>;
      const keys = Object.keys(obj)
        .filter((k) => obj[k] !== undefined)
        .sort(compareUtf16);
      return "{" + keys.map((k) => JSON.stringify(k) + ":" + canon(obj[k])).join(",") + "}";
    }
    default:
      return "null";
  }
}

/* RFC 8785 sorts member names by their UTF-16 code units: plain < and >. */
function compareUtf16(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Canonical JSON text of params (undefined or null: `{}`). */
export function canonicalParams(params: unknown): string {
  if (params === undefined || params === null) return "{}";
  return canon(params as Json);
}

/** The key of one (context, params) pair. */
export function targetKey(context: string, params: unknown): string {
  return context + "\u0000" + canonicalParams(params);
}

/**
 * The query string of params (with its leading "?", or "" when empty),
 * members sorted: strings as they are, numbers and booleans as JSON writes
 * them, null as an empty value (the gateway reads it back as null).
 * Undefined members are left out.
 */
export function paramsQuery(params: unknown): string {
  if (params === undefined || params === null) return "";
  if (typeof params !== "object" || Array.isArray(params)) {
    throw new TypeError("context params must be an object");
  }
  const obj = params as Record<string, unknown>;
  const parts: string[] = [];
  for (const k of Object.keys(obj).sort(compareUtf16)) {
    const v = obj[k];
    if (v === undefined) continue;
    let text: string;
    if (v === null) text = "";
    else if (typeof v === "string") text = v;
    else if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint") text = String(v);
    else throw new TypeError(`context param "${k}" must be a string, number, boolean or null`);
    parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(text));
  }
  return parts.length > 0 ? "?" + parts.join("&") : "";
}
