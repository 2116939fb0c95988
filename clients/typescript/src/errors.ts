/*
 * errors.ts - the two kinds of failure a Mizan client reports.
 *
 * MizanError: the gateway answered, in the protocol's error envelope
 * ({"error": {"code", "message", "details"}}, PROTOCOL section 3). Its code
 * is for programs, its message for humans, status is the HTTP status.
 *
 * NetworkError: no protocol answer at all: the request could not be sent
 * or was aborted, the browser refused it (CORS), the connection broke, or
 * what came back is not the envelope (an HTML page from a proxy, bad JSON).
 * A NetworkError is never a MizanError, so `instanceof` tells them apart.
 */

/** A protocol error answered by the gateway. */
export class MizanError extends Error {
  /** Error code of PROTOCOL section 3 ("NOT_FOUND", "VALIDATION_FAILED", ...). */
  readonly code: string;
  /** HTTP status of the answer (0 for an error carried inside a bundle). */
  readonly status: number;
  /** The envelope's details (validation list, request id, invalidations...). */
  readonly details: unknown;

  constructor(code: string, message: string, details: unknown, status: number) {
    super(message);
    this.name = "MizanError";
    this.code = code;
    this.status = status;
    this.details = details;
  }
}

/** A failure below the protocol: transport, abort, or a non-envelope answer. */
export class NetworkError extends Error {
  /** HTTP status when an answer arrived but was not the envelope, else 0. */
  readonly status: number;
  /** The underlying error (a fetch TypeError, a JSON SyntaxError...), if any. */
  readonly cause: unknown;

  constructor(message: string, options: { status?: number; cause?: unknown } = {}) {
    super(message);
    this.name = "NetworkError";
    this.status = options.status ?? 0;
    this.cause = options.cause;
  }
}
