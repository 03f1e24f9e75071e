// Any image -> the raw model input: a float32 tensor (C, H, W) in [0, 1] (mpcvit.client.preprocess).
//
// Accepted images:
// * an ImageData-like RGBA buffer {width, height, data: Uint8ClampedArray | Uint8Array of 4 * width * height}
//   (canvas getImageData, a decoded PNG): read as Pillow reads an RGBA image, convert("L") (integer ITU-R 601-2
//   luma, (299 R + 587 G + 114 B) / 1000 rounded) or convert("RGB") (alpha dropped), then / 255;
// * a tensor-like {shape, data} with shape (H, W), (H, W, C) or (C, H, W), C in {1, 3}, values in [0, 1];
// * nested arrays of numbers in [0, 1] shaped the same ways;
// * a flat Float32Array / number[] of exactly C * H * W values: already the model's (C, H, W).
// Arrays: values are read as float32 (as numpy does); RGB -> gray is 0.299 R + 0.587 G + 0.114 B, gray -> RGB
// repeats the channel. Resizing to (H, W): box average when both sides shrink (torch's "area"), otherwise
// bilinear with align_corners=False (torch's "bilinear"), then clamped to [0, 1]. Results agree with the Python
// SDK to float32 rounding (about 1e-7, see test/vectors.json); encoded in 16-bit fixed point they are the
// same integers except, rarely, one unit where a value lies within that rounding of a half-unit.

export const MAX_IMAGE_PIXELS = 4096 * 4096;
const f32 = Math.fround;

/** The input is not an image this model can take. */
export class ImageError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ImageError';
  }
}

function isImageDataLike(image) {
  return image !== null && typeof image === 'object' && Number.isInteger(image.width) && Number.isInteger(image.height) &&
    (image.data instanceof Uint8ClampedArray || image.data instanceof Uint8Array);
}

function fromRgba(image, channels) {
  const { width: w, height: h, data } = image;
  if (w <= 0 || h <= 0) throw new ImageError('an image needs at least one pixel');
  if (w * h > MAX_IMAGE_PIXELS) throw new ImageError(`image is ${w}x${h}, more than ${MAX_IMAGE_PIXELS} pixels`);
  if (data.length !== 4 * w * h) throw new ImageError(`RGBA data of a ${w}x${h} image has ${4 * w * h} bytes, got ${data.length}`);
  const n = w * h;
  const out = new Float32Array(channels * n);
  for (let i = 0; i < n; i++) {
    const r = data[4 * i];
    const g = data[4 * i + 1];
    const b = data[4 * i + 2];
    if (channels === 1) {
      out[i] = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16) / 255; // Pillow's L24 luma
    } else {
      out[i] = r / 255;
      out[n + i] = g / 255;
      out[2 * n + i] = b / 255;
    }
  }
  return { shape: [channels, h, w], data: out };
}

function flattenNested(value) {
  const shape = [];
  let level = value;
  while (Array.isArray(level)) {
    shape.push(level.length);
    if (level.length === 0) throw new ImageError('an empty pixel array');
    level = level[0];
  }
  const total = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(total);
  let at = 0;
  const walk = (v, depth) => {
    if (depth === shape.length) {
      if (typeof v !== 'number') throw new ImageError('pixel values must be numbers');
      data[at++] = v;
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[depth]) throw new ImageError('the pixel array must be rectangular (every row the same length)');
    for (const item of v) walk(item, depth + 1);
  };
  walk(value, 0);
  return { shape, data };
}

function toChw(shape, data, channels) {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) throw new ImageError('pixel values must be finite');
  }
  if (data.length === 0) throw new ImageError('pixel values must lie in [0, 1]');
  for (let i = 0; i < data.length; i++) {
    if (data[i] < 0 || data[i] > 1) throw new ImageError('pixel values must lie in [0, 1]');
  }
  let [c, h, w] = [0, 0, 0];
  let x = data;
  if (shape.length === 2) {
    [c, h, w] = [1, shape[0], shape[1]];
  } else if (shape.length === 3 && ![1, 3].includes(shape[0]) && [1, 3].includes(shape[2])) {
    [h, w, c] = shape; // HWC -> CHW
    x = new Float32Array(data.length);
    for (let i = 0; i < h * w; i++) for (let k = 0; k < c; k++) x[k * h * w + i] = data[i * c + k];
  } else if (shape.length === 3) {
    [c, h, w] = shape;
  }
  if (![1, 3].includes(c) || shape.length < 2 || shape.length > 3) {
    throw new ImageError(`pixel array must be (H, W), (H, W, C) or (C, H, W) with C in (1, 3); got (${shape.join(', ')})`);
  }
  const n = h * w;
  if (c === 3 && channels === 1) {
    const [wr, wg, wb] = [f32(0.299), f32(0.587), f32(0.114)];
    const gray = new Float32Array(n);
    for (let i = 0; i < n; i++) gray[i] = f32(f32(f32(x[i] * wr) + f32(x[n + i] * wg)) + f32(x[2 * n + i] * wb));
    return { shape: [1, h, w], data: gray };
  }
  if (c === 1 && channels === 3) {
    const rgb = new Float32Array(3 * n);
    rgb.set(x, 0);
    rgb.set(x, n);
    rgb.set(x, 2 * n);
    return { shape: [3, h, w], data: rgb };
  }
  return { shape: [c, h, w], data: x instanceof Float32Array ? x : Float32Array.from(x) };
}

// torch's adaptive average pooling (F.interpolate mode="area"): window [floor(i*in/out), ceil((i+1)*in/out)).
function areaResize(src, c, hIn, wIn, h, w) {
  const out = new Float32Array(c * h * w);
  for (let k = 0; k < c; k++) {
    for (let oy = 0; oy < h; oy++) {
      const y0 = Math.floor((oy * hIn) / h);
      const y1 = Math.floor(((oy + 1) * hIn + h - 1) / h);
      for (let ox = 0; ox < w; ox++) {
        const x0 = Math.floor((ox * wIn) / w);
        const x1 = Math.floor(((ox + 1) * wIn + w - 1) / w);
        let sum = 0;
        for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) sum = f32(sum + src[k * hIn * wIn + y * wIn + x]);
        out[k * h * w + oy * w + ox] = f32(f32(sum / (y1 - y0)) / (x1 - x0)); // torch: sum / kh / kw
      }
    }
  }
  return out;
}

function bilinearIndex(dst, inSize, outSize) {
  const scale = f32(inSize / outSize);
  let src = f32(f32(scale * f32(dst + 0.5)) - 0.5);
  if (src < 0) src = 0;
  const i0 = Math.floor(src);
  const i1 = i0 + (i0 < inSize - 1 ? 1 : 0);
  const l1 = f32(src - i0);
  return [i0, i1, f32(1 - l1), l1];
}

// torch's upsample_bilinear2d with align_corners=False (F.interpolate mode="bilinear").
function bilinearResize(src, c, hIn, wIn, h, w) {
  const out = new Float32Array(c * h * w);
  const ys = Array.from({ length: h }, (_, i) => bilinearIndex(i, hIn, h));
  const xs = Array.from({ length: w }, (_, i) => bilinearIndex(i, wIn, w));
  for (let k = 0; k < c; k++) {
    const plane = k * hIn * wIn;
    for (let oy = 0; oy < h; oy++) {
      const [y0, y1, ly0, ly1] = ys[oy];
      for (let ox = 0; ox < w; ox++) {
        const [x0, x1, lx0, lx1] = xs[ox];
        const top = f32(f32(lx0 * src[plane + y0 * wIn + x0]) + f32(lx1 * src[plane + y0 * wIn + x1]));
        const bottom = f32(f32(lx0 * src[plane + y1 * wIn + x0]) + f32(lx1 * src[plane + y1 * wIn + x1]));
        out[k * h * w + oy * w + ox] = f32(f32(ly0 * top) + f32(ly1 * bottom));
      }
    }
  }
  return out;
}

/** Resize a (C, H, W) float32 tensor: box average when shrinking, bilinear otherwise; clamped to [0, 1]. */
export function resize(x, height, width) {
  const [c, hIn, wIn] = x.shape;
  if (hIn === height && wIn === width) return x;
  const shrink = hIn >= height && wIn >= width;
  const data = (shrink ? areaResize : bilinearResize)(x.data, c, hIn, wIn, height, width);
  for (let i = 0; i < data.length; i++) data[i] = Math.min(1, Math.max(0, data[i]));
  return { shape: [c, height, width], data };
}

/** Any image -> {shape: [C, H, W], data: Float32Array} in [0, 1] for a model whose input shape is `inputShape`. */
export function preprocess(image, inputShape) {
  const [C, H, W] = Array.from(inputShape, Number);
  if (![C, H, W].every((s) => Number.isInteger(s) && s > 0)) throw new ImageError(`bad input shape ${JSON.stringify(inputShape)}`);
  if (C !== 1 && C !== 3) throw new ImageError(`models with ${C} input channels are not supported (1 or 3)`);
  let x;
  if (isImageDataLike(image)) {
    x = fromRgba(image, C);
  } else if (image && typeof image === 'object' && Array.isArray(image.shape) && image.data !== undefined) {
    const shape = Array.from(image.shape, Number);
    const total = shape.reduce((a, b) => a * b, 1);
    if (image.data.length !== total) throw new ImageError(`shape (${shape.join(', ')}) needs ${total} values, got ${image.data.length}`);
    x = toChw(shape, Float32Array.from(image.data), C);
  } else if (Array.isArray(image) && Array.isArray(image[0])) {
    const flat = flattenNested(image);
    x = toChw(flat.shape, flat.data, C);
  } else if (image instanceof Float32Array || image instanceof Float64Array || Array.isArray(image)) {
    if (image.length !== C * H * W) {
      throw new ImageError(`a flat array must hold the model's C*H*W = ${C * H * W} values, got ${image.length}; give {shape, data} otherwise`);
    }
    x = toChw([C, H, W], Float32Array.from(image), C);
  } else {
    throw new ImageError('not an image: give ImageData-like RGBA, {shape, data}, nested arrays or a flat Float32Array');
  }
  return resize(x, H, W);
}
