/**
 * What a bad function package is: one error type with an HTTP status and a code,
 * and a message that names the cause (file, line, limit) and what to do.
 * Nothing is deployed when one is thrown.
 */

export type PackageErrorCode =
  | 'PACKAGE_INVALID' // not a .tar.gz/.zip, corrupt archive
  | 'PACKAGE_TOO_LARGE' // archive, unpacked size or file count above a limit
  | 'PACKAGE_PATH_TRAVERSAL' // ../, absolute paths, symlinks that leave the package
  | 'PACKAGE_UNSUPPORTED_ENTRY' // hard links, devices, FIFOs
  | 'HANDLER_NOT_FOUND'
  | 'LOCKFILE_MISSING'
  | 'DEPENDENCY_NOT_ALLOWED' // file:, link:, git and URL dependencies
  | 'NATIVE_ADDON'
  | 'INSTALL_FAILED'
  | 'INSTALL_TIMEOUT'
  | 'SYNTAX_ERROR'
  | 'BUILD_FAILED'
  | 'BUNDLE_TOO_LARGE'
  | 'BUILDER_BUSY';

const STATUS: Record<PackageErrorCode, number> = {
  PACKAGE_INVALID: 400,
  PACKAGE_TOO_LARGE: 413,
  PACKAGE_PATH_TRAVERSAL: 400,
  PACKAGE_UNSUPPORTED_ENTRY: 400,
  HANDLER_NOT_FOUND: 422,
  LOCKFILE_MISSING: 422,
  DEPENDENCY_NOT_ALLOWED: 422,
  NATIVE_ADDON: 422,
  INSTALL_FAILED: 422,
  INSTALL_TIMEOUT: 422,
  SYNTAX_ERROR: 400,
  BUILD_FAILED: 422,
  BUNDLE_TOO_LARGE: 413,
  BUILDER_BUSY: 429,
};

export class PackageError extends Error {
  readonly status: number;
  constructor(
    readonly code: PackageErrorCode,
    message: string,
    /** The package file the error is about, when there is one. */
    readonly file?: string,
  ) {
    super(message);
    this.name = 'PackageError';
    this.status = STATUS[code];
  }
}
