// samkit's client-side decoder page: an image, its embedding (.npy) and the exported decoder
// (Meta's ONNX contract, see samkit/export/onnx_decoder.py) run with onnxruntime-web (wasm).
//
// The page reads `model.json` (default `data/model.json`, or `?config=URL`):
//   {"decoder": "decoder.onnx", "image": "image.png", "embedding": "embedding.npy",
//    "image_size": S, "embedding_shape": [1, C, g, g], "mask_input_size": 4g}
// (URLs relative to model.json). `?embedding=URL` / `?image=URL` override the files it names.
// Coordinates: clicks are original image pixels (XY); they enter the decoder in the resized
// frame, each axis scaled by resized / original size (samkit.transforms.CoordinateMap).
import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import { parseNpy } from "./npy.js";

const params = new URLSearchParams(location.search);
ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", location.href).href;
// Threads: `?threads=N`, else 2 where the page is cross-origin isolated (demos/web_server.py sends
// COOP/COEP, so SharedArrayBuffer and multithreaded wasm are available), else 1.
const defaultThreads = self.crossOriginIsolated ? Math.min(2, navigator.hardwareConcurrency || 1) : 1;
ort.env.wasm.numThreads = Number(params.get("threads") || defaultThreads);

const $ = (id) => document.getElementById(id);
const state = {
  config: null, session: null, embedding: null, image: null,
  points: [], box: null, boxMode: false, dragStart: null,
  busy: false, pending: null, latencies: [], lastMask: null,
};

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
  document.body.dataset.state = isError ? "error" : state.session && state.embedding && state.image ? "ready" : "loading";
}

/** Side lengths (h, w) after scaling the long side to `longSide` (samkit.transforms.preprocess_shape). */
function preprocessShape(height, width, longSide) {
  const scale = longSide / Math.max(height, width);
  return [Math.max(1, Math.floor(height * scale + 0.5)), Math.max(1, Math.floor(width * scale + 0.5))];
}

function checkEmbedding(npy, source) {
  const expected = state.config.embedding_shape;
  if (npy.shape.length !== expected.length || npy.shape.some((v, i) => v !== expected[i])) {
    throw new Error(`embedding ${source} has shape (${npy.shape.join(", ")}); this decoder expects ` +
      `(${expected.join(", ")}) - write it with \`samkit export embedding IMAGE --model M --out FILE.npy\` ` +
      "using the model the decoder was exported from");
  }
  return new ort.Tensor("float32", npy.data, npy.shape);
}

async function loadEmbedding(buffer, source) {
  state.embedding = null;
  state.embedding = checkEmbedding(parseNpy(buffer), source);
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load the image ${url}`));
    img.src = url;
  });
}

function showImage(img) {
  state.image = img;
  for (const id of ["image", "overlay"]) {
    $(id).width = img.naturalWidth;
    $(id).height = img.naturalHeight;
  }
  $("image").getContext("2d").drawImage(img, 0, 0);
  clearPrompts();
}

/** The decoder inputs for the current prompts (+ an optional hover point), as Meta's clients build them. */
function decoderInputs(extraPoint) {
  const H = state.image.naturalHeight, W = state.image.naturalWidth;
  const [h, w] = preprocessShape(H, W, state.config.image_size);
  const points = extraPoint ? [...state.points, extraPoint] : [...state.points];
  const coords = [], labels = [];
  for (const p of points) { coords.push(p.x * (w / W), p.y * (h / H)); labels.push(p.label); }
  if (state.box) {
    const b = state.box;
    coords.push(b.x0 * (w / W), b.y0 * (h / H), b.x1 * (w / W), b.y1 * (h / H));
    labels.push(2, 3);
  } else {
    coords.push(0, 0);
    labels.push(-1);
  }
  const side = state.config.mask_input_size;
  return {
    image_embeddings: state.embedding,
    point_coords: new ort.Tensor("float32", Float32Array.from(coords), [1, labels.length, 2]),
    point_labels: new ort.Tensor("float32", Float32Array.from(labels), [1, labels.length]),
    mask_input: new ort.Tensor("float32", new Float32Array(side * side), [1, 1, side, side]),
    has_mask_input: new ort.Tensor("float32", Float32Array.from([0]), [1]),
    orig_im_size: new ort.Tensor("float32", Float32Array.from([H, W]), [2]),
  };
}

/** Meta's single-mask rule for a K = 4 output: output 0 for more than two points, else the best of 1..3. */
function chooseOutput(scores, numPoints) {
  if (scores.length === 1 || numPoints > 2) return 0;
  let best = 1;
  for (let k = 2; k < scores.length; k++) if (scores[k] > scores[best]) best = k;
  return best;
}

async function decode(extraPoint) {
  if (!state.session || !state.embedding || !state.image) return;
  if (!extraPoint && state.points.length === 0 && !state.box) { drawMask(null); return; }
  if (state.busy) { state.pending = { extraPoint }; return; }
  state.busy = true;
  try {
    const feeds = decoderInputs(extraPoint);
    const started = performance.now();
    const out = await state.session.run(feeds);
    const elapsed = performance.now() - started;
    state.latencies.push(elapsed);
    const sorted = [...state.latencies].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    $("latency").textContent = `decode: ${elapsed.toFixed(1)} ms (median ${median.toFixed(1)} ms over ` +
      `${sorted.length}; ${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads > 1 ? "s" : ""})`;
    const [, K, H, W] = out.masks.dims;
    const k = chooseOutput(Array.from(out.iou_predictions.data), feeds.point_labels.dims[1]);
    const logits = out.masks.data.subarray(k * H * W, (k + 1) * H * W);
    const mask = new Uint8Array(H * W);
    for (let i = 0; i < mask.length; i++) mask[i] = logits[i] > 0 ? 1 : 0;
    state.lastMask = { width: W, height: H, output: k, outputs: K, score: out.iou_predictions.data[k], mask };
    drawMask(state.lastMask);
  } catch (error) {
    setStatus(`decoder failed: ${error.message}`, true);
  } finally {
    state.busy = false;
    if (state.pending) { const next = state.pending; state.pending = null; decode(next.extraPoint); }
  }
}

function drawMask(result) {
  const canvas = $("overlay"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (result) {
    const pixels = ctx.createImageData(result.width, result.height);
    for (let i = 0; i < result.mask.length; i++) {
      if (result.mask[i]) pixels.data.set([30, 144, 255, 130], 4 * i);
    }
    ctx.putImageData(pixels, 0, 0);
  }
  for (const p of state.points) {
    ctx.fillStyle = p.label === 1 ? "#00c853" : "#d50000";
    ctx.beginPath(); ctx.arc(p.x, p.y, 4, 0, 2 * Math.PI); ctx.fill();
  }
  if (state.box) {
    ctx.strokeStyle = "#ffab00"; ctx.lineWidth = 2;
    ctx.strokeRect(state.box.x0, state.box.y0, state.box.x1 - state.box.x0, state.box.y1 - state.box.y0);
  }
}

function clearPrompts() {
  state.points = []; state.box = null; state.lastMask = null;
  drawMask(null);
}

function imagePoint(event) {
  const rect = $("overlay").getBoundingClientRect();
  return {
    x: (event.clientX - rect.left) * ($("overlay").width / rect.width),
    y: (event.clientY - rect.top) * ($("overlay").height / rect.height),
  };
}

function wireEvents() {
  const overlay = $("overlay");
  overlay.addEventListener("contextmenu", (e) => e.preventDefault());
  overlay.addEventListener("mousemove", (e) => {
    if (state.boxMode && state.dragStart) {
      const p = imagePoint(e), s = state.dragStart;
      state.box = { x0: Math.min(s.x, p.x), y0: Math.min(s.y, p.y), x1: Math.max(s.x, p.x), y1: Math.max(s.y, p.y) };
      drawMask(state.lastMask);
    } else if (!state.boxMode) {
      decode({ ...imagePoint(e), label: 1 });
    }
  });
  overlay.addEventListener("mousedown", (e) => {
    if (state.boxMode) { state.dragStart = imagePoint(e); return; }
    const label = e.button === 2 || e.shiftKey ? 0 : 1;
    state.points.push({ ...imagePoint(e), label });
    decode(null);
  });
  overlay.addEventListener("mouseup", () => {
    if (state.boxMode && state.dragStart) { state.dragStart = null; decode(null); }
  });
  $("box-mode").addEventListener("click", () => {
    state.boxMode = !state.boxMode;
    $("box-mode").classList.toggle("active", state.boxMode);
  });
  $("clear").addEventListener("click", clearPrompts);
  $("image-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try { showImage(await loadImage(URL.createObjectURL(file))); setStatus(`image ${file.name}`); }
    catch (error) { setStatus(error.message, true); }
  });
  $("embedding-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try { await loadEmbedding(await file.arrayBuffer(), file.name); clearPrompts(); setStatus(`embedding ${file.name}`); }
    catch (error) { setStatus(error.message, true); }
  });
}

async function fetchBytes(url, what) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot load the ${what} ${url}: HTTP ${response.status}`);
  return response.arrayBuffer();
}

async function main() {
  wireEvents();
  try {
    const configUrl = new URL(params.get("config") || "data/model.json", location.href);
    const response = await fetch(configUrl);
    if (!response.ok) throw new Error(`cannot load ${configUrl}: HTTP ${response.status}`);
    state.config = await response.json();
    const at = (name) => new URL(name, configUrl).href;
    const decoderBytes = await fetchBytes(at(state.config.decoder), "decoder");
    state.session = await ort.InferenceSession.create(decoderBytes, { executionProviders: ["wasm"] });
    if (state.config.image || params.get("image")) {
      showImage(await loadImage(params.get("image") || at(state.config.image)));
    }
    if (state.config.embedding || params.get("embedding")) {
      const source = params.get("embedding") || at(state.config.embedding);
      await loadEmbedding(await fetchBytes(source, "embedding"), source);
    }
    setStatus(state.embedding && state.image ? "ready: hover or click the image"
      : "decoder loaded: choose an image and its embedding (.npy)");
  } catch (error) {
    setStatus(error.message, true);
  }
}

// For scripts and tests: decode at an image point and read the mask back.
window.samkit = {
  state,
  async clickAt(x, y, label = 1) {
    while (state.busy) await new Promise((resolve) => setTimeout(resolve, 5));
    state.points.push({ x, y, label });
    await decode(null);
    return state.lastMask;
  },
  lastMaskBits() { return state.lastMask ? Array.from(state.lastMask.mask) : null; },
  latencies() { return [...state.latencies]; },
  clear: clearPrompts,
};

main();
