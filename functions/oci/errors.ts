/**
 * Why an image cannot become a function: each cause has its own code and HTTP
 * status (4xx: the image or the reference is wrong; 502: the registry failed or
 * served bytes that do not match their digest). The gateway maps these by
 * name (`ImageError`), as it does package errors.
 */
export type ImageErrorCode =
  | 'IMAGE_REFERENCE_INVALID'
  | 'IMAGE_NOT_FOUND'
  | 'IMAGE_UNAUTHORIZED'
  | 'IMAGE_REGISTRY_UNREACHABLE'
  | 'IMAGE_REGISTRY_ERROR'
  | 'IMAGE_MANIFEST_INVALID'
  | 'IMAGE_DIGEST_MISMATCH'
  | 'IMAGE_WRONG_ARCHITECTURE'
  | 'IMAGE_TOO_LARGE'
  | 'IMAGE_LAYER_UNSAFE'
  | 'IMAGE_LAYER_UNSUPPORTED'
  | 'IMAGE_NO_PROCESS';

const STATUS: Record<ImageErrorCode, number> = {
  IMAGE_REFERENCE_INVALID: 400,
  IMAGE_NOT_FOUND: 422,
  IMAGE_UNAUTHORIZED: 422,
  IMAGE_REGISTRY_UNREACHABLE: 502,
  IMAGE_REGISTRY_ERROR: 502,
  IMAGE_MANIFEST_INVALID: 422,
  IMAGE_DIGEST_MISMATCH: 502,
  IMAGE_WRONG_ARCHITECTURE: 422,
  IMAGE_TOO_LARGE: 422,
  IMAGE_LAYER_UNSAFE: 422,
  IMAGE_LAYER_UNSUPPORTED: 422,
  IMAGE_NO_PROCESS: 422,
};

export class ImageError extends Error {
  readonly status: number;
  constructor(
    readonly code: ImageErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ImageError';
    this.status = STATUS[code];
  }
}
