// mpcvit client SDK for browsers and Node 20+: private ViT inference over two-party MPC.
// See README.md; the Python twin is mpcvit/client.py.

export * from './client.js';
export {
  BoxContext, DIRECTIONS, MAX_SEALED_ELEMENTS, NONCE_BYTES, SEAL_INFO, b64decode, b64encode, boxAad, deriveBoxKey,
  encodeFixedPoint, generateKeyPair, keyPairFromPrivate, openTensor, randomRing, reconstructFixedPoint, roundHalfEven, sealTensor,
  shareFixedPoint,
} from './sealing.js';
export {
  KEY_STATEMENT, ROLE_DOMAIN, certRole, checkPinned, ecdsaDerToRaw, isLoopback, keyFingerprint, keyStatement, pemToDer,
  verifyPartyKey,
} from './pki.js';
export { MAX_IMAGE_PIXELS, preprocess, resize } from './preprocess.js';
