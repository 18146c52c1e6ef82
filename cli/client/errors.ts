/**
 * Exit codes of the client commands (documented in the README and `mayfly help`):
 *   0  done
 *   1  the function answered with an error (invoke: HTTP status >= 400 from the function)
 *   2  usage: a bad option, argument or stack file
 *   3  the gateway refused the request (4xx: invalid spec, not found, not authorised)
 *   4  the gateway could not be reached, or failed (5xx)
 */
export const EXIT = { ok: 0, functionError: 1, usage: 2, refused: 3, unavailable: 4 } as const;

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export const usageError = (message: string): CliError => new CliError(message, EXIT.usage);
