// Types of the mpcvit client SDK (hand-written; the modules are plain ES modules).

// -- sealing ---------------------------------------------------------------------------------------

export declare const SEAL_INFO: 'mpcvit-seal-v2';
export declare const NONCE_BYTES: 12;
export declare const MAX_SEALED_ELEMENTS: number;
export declare const DIRECTIONS: readonly ['input', 'output'];
export type Direction = 'input' | 'output';

/** An int64 tensor (ring elements of Z_2^64 as two's complement). */
export interface Int64Tensor {
  shape: number[];
  data: BigInt64Array;
}

/** A float32 tensor, e.g. the preprocessed image (C, H, W). */
export interface Float32Tensor {
  shape: number[];
  data: Float32Array;
}

/** A sealed tensor: public shape and dtype, 12-byte nonce, AES-GCM ciphertext with the tag appended. */
export interface Sealed {
  shape: number[];
  dtype: 'int64' | string;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
}

/** A sealed tensor on the wire: bytes as standard base64. */
export interface SealedJson {
  shape: number[];
  dtype: string;
  nonce: string;
  ciphertext: string;
}

export interface KeyPair {
  privateKey: CryptoKey;
  publicKey: Uint8Array;
}

export declare class SealError extends Error {}

export declare class BoxContext {
  constructor(requestId: string, model: string, rank: 0 | 1, direction: Direction);
  readonly requestId: string;
  readonly model: string;
  readonly rank: 0 | 1;
  readonly direction: Direction;
  encode(): Uint8Array;
  describe(): string;
}

export declare function b64encode(data: Uint8Array | ArrayBuffer | ArrayBufferView): string;
export declare function b64decode(text: string, what?: string): Uint8Array;
export declare function boxAad(context: BoxContext, shape: number[], dtype?: string): Uint8Array;
export declare function generateKeyPair(): Promise<KeyPair>;
export declare function keyPairFromPrivate(privateBytes: Uint8Array): Promise<KeyPair>;
export declare function deriveBoxKey(own: KeyPair, peerPublic: Uint8Array, direction: Direction, ownIsClient: boolean): Promise<Uint8Array>;
/** `options._nonce`: known-answer test vectors only. */
export declare function sealTensor(
  tensor: Int64Tensor, own: KeyPair, peerPublic: Uint8Array, context: BoxContext, options?: { _nonce?: Uint8Array },
): Promise<Sealed>;
export declare function openTensor(sealed: Sealed, own: KeyPair, peerPublic: Uint8Array, context: BoxContext): Promise<Int64Tensor>;
export declare function roundHalfEven(v: number): number;
export declare function encodeFixedPoint(values: ArrayLike<number>, precisionBits?: number): BigInt64Array;
export declare function randomRing(n: number): BigInt64Array;
/** `options._mask`: known-answer test vectors only. */
export declare function shareFixedPoint(
  x: { shape: number[]; data: ArrayLike<number> }, precisionBits?: number, options?: { _mask?: BigInt64Array },
): [Int64Tensor, Int64Tensor];
export declare function reconstructFixedPoint(share0: Int64Tensor, share1: Int64Tensor, precisionBits?: number): Float64Array;

// -- party keys ------------------------------------------------------------------------------------

export declare const KEY_STATEMENT: 'mpcvit party sealing key v1';
export declare const ROLE_DOMAIN: 'role.mpcvit.invalid';

export declare class PartyKeyError extends Error {}

/** What a party publishes about its sealing key (GET /v1/parties/keys, decoded). */
export interface PartyKeyProof {
  rank: 0 | 1;
  publicKey: Uint8Array;
  /** PEM */
  certificate: string;
  /** DER ECDSA P-256 / SHA-256 */
  signature: Uint8Array;
}

export declare function keyFingerprint(publicKey: Uint8Array): Promise<string>;
export declare function checkPinned(rank: number, publicKey: Uint8Array, pinned: string): Promise<void>;
export declare function keyStatement(rank: number, publicKey: Uint8Array): Uint8Array;
export declare function ecdsaDerToRaw(der: Uint8Array, size?: number): Uint8Array;
export declare function pemToDer(pem: string | Uint8Array): Uint8Array;
/** The role a PKI.js Certificate names, or null. */
export declare function certRole(cert: unknown): string | null;
/** Resolves when the key is the party's under the CA; rejects with PartyKeyError otherwise. `pkijs`: a loaded PKI.js module. */
export declare function verifyPartyKey(proof: PartyKeyProof, caPem: string | Uint8Array, options?: { now?: Date; pkijs?: unknown }): Promise<void>;
export declare function isLoopback(host: string): boolean;

// -- preprocessing ---------------------------------------------------------------------------------

export declare const MAX_IMAGE_PIXELS: number;
export declare class ImageError extends Error {}

/** ImageData from a canvas, or any {width, height, data} RGBA buffer. */
export interface ImageDataLike {
  width: number;
  height: number;
  data: Uint8ClampedArray | Uint8Array;
}

type Nested2D = number[][];
type Nested3D = number[][][];

/**
 * An RGBA buffer; {shape, data} with shape (H, W), (H, W, C) or (C, H, W), C in {1, 3}, values in [0, 1];
 * nested arrays shaped the same; or a flat array of exactly the model's C * H * W values.
 */
export type ImageInput =
  | ImageDataLike
  | { shape: number[]; data: ArrayLike<number> }
  | Nested2D
  | Nested3D
  | Float32Array
  | Float64Array
  | number[];

export declare function preprocess(image: ImageInput, inputShape: ArrayLike<number>): Float32Tensor;
export declare function resize(x: Float32Tensor, height: number, width: number): Float32Tensor;

// -- the client ------------------------------------------------------------------------------------

export declare const DEFAULT_PRECISION_BITS: 16;
export declare const PLAUSIBLE_LOGIT: number;
export declare const DEFAULT_RETRIES: 2;
export declare const DEFAULT_TIMEOUT_MS: number;

export declare class ImplausibleOutput extends Error {}
export declare class ServerError extends Error {
  constructor(statusCode: number, detail: string);
  readonly statusCode: number;
  readonly detail: string;
}

/** An entry of GET /v1/models (server/schemas.py ModelInfo). */
export interface ModelInfo {
  name: string;
  label?: string;
  variant?: string;
  arch?: string;
  input_shape: [number, number, number] | number[];
  classes: string[];
  precision_bits: number;
  accuracy?: number | null;
  dataset?: string | null;
  loaded?: boolean;
  measured_cost?: Record<string, number> | null;
  [more: string]: unknown;
}

export interface PartyCosts {
  rank: number;
  rounds: number;
  bytes_sent: number;
  bytes_received: number;
  seconds: number;
  dealer?: { bytes: number; wait_seconds: number; fetch_seconds: number; prefetched: boolean };
}

/** Costs of the secure forward (server/schemas.py CostsOut). */
export interface Costs {
  total: { rounds: number; bytes: number; seconds: number };
  parties: PartyCosts[];
}

/** The body of POST /v1/classify (server/schemas.py PrivateClassifyRequest). */
export interface ClassifyRequestJson {
  model: string;
  request_id: string;
  client_public_key: string;
  shares: [SealedJson, SealedJson];
  deadline_unix_ms?: number;
}

export interface SealedRequest {
  requestId: string;
  keyPair: KeyPair;
  shares: [Sealed, Sealed];
  model: string;
}

export interface Result {
  model: string;
  requestId: string;
  classIndex: number;
  className: string;
  /** softmax probability of the class (null when the model's output policy reveals no logits) */
  confidence: number | null;
  /** empty under a `label` / `topk:K` policy */
  logits: number[];
  /** set when the model owner's policy reveals only indices: "label" or "topk:K" */
  outputPolicy?: string;
  /** the K best classes, best first, under "topk:K" (one under "label") */
  topK?: { index: number; name: string }[];
  probabilities: number[];
  costs: Costs | Record<string, unknown>;
  queueSeconds: number;
  batchSize: number;
  /** client wall time, request to opened answer */
  seconds: number;
}

export declare function newRequestId(): string;
/** `_keyPair`, `_mask`, `_nonces`: known-answer test vectors only. */
export declare function sealInput(
  x: Float32Tensor, partyKeys: Uint8Array[], precisionBits: number | undefined,
  options: { model: string; requestId?: string; _keyPair?: KeyPair; _mask?: BigInt64Array; _nonces?: [Uint8Array, Uint8Array] },
): Promise<SealedRequest>;
export declare function openOutput(
  request: Pick<SealedRequest, 'requestId' | 'model' | 'keyPair'>, outputShares: Sealed[], partyKeys: Uint8Array[], precisionBits?: number,
): Promise<Float64Array>;
export declare function checkPlausible<T extends ArrayLike<number>>(logits: T, bound?: number): T;
export declare function sealedToJson(s: Sealed): SealedJson;
export declare function sealedFromJson(d: SealedJson): Sealed;
export declare function requestToJson(model: string, req: SealedRequest, deadlineUnixMs?: number | null): ClassifyRequestJson;
export declare function softmax(logits: ArrayLike<number>): number[];
export declare function makeResult(
  info: ModelInfo, requestId: string, logits: ArrayLike<number>, costs?: Costs | Record<string, unknown>, queueSeconds?: number,
  batchSize?: number, seconds?: number,
): Result;

export interface PrivateClientOptions {
  /** bearer token for the coordinator */
  token?: string;
  /** per HTTP request; default 60000 */
  timeoutMs?: number;
  /** the parties' keys themselves (raw or base64); the coordinator is not asked for them */
  partyKeys?: (Uint8Array | string)[];
  /** the deployment's CA certificate (PEM): each party key must be signed by a certificate the CA issued for party<rank> */
  ca?: string | Uint8Array;
  /** sha256:<hex> fingerprints of party 0's and party 1's sealing keys */
  pins?: [string, string];
  /** use the keys as the coordinator relays them: accepted only for a loopback coordinator (the local demo) */
  trustCoordinator?: boolean;
  /** a fetch implementation (default globalThis.fetch) */
  fetch?: typeof globalThis.fetch;
  /** a loaded PKI.js module (browsers without an import map for 'pkijs') */
  pkijs?: unknown;
  /** times a 503 is retried with the same sealed request; default 2 */
  retries?: number;
  /** the time certificates must be valid at (tests); default: the clock */
  now?: () => Date;
}

export declare class PrivateClient {
  constructor(serverUrl?: string, options?: PrivateClientOptions);
  readonly serverUrl: string;
  retries: number;
  timeoutMs: number;
  /** answers refused by the integrity net */
  implausible: number;
  /** requests sent again after a 503 */
  retried: number;
  models(refresh?: boolean): Promise<Record<string, ModelInfo>>;
  partyKeys(): Promise<Uint8Array[]>;
  classify(image: ImageInput, options?: { model?: string; deadlineUnixMs?: number }): Promise<Result>;
}
