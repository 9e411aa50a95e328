// Reading NumPy .npy files (format versions 1-3) holding little-endian float32 arrays in C order.

/**
 * Parse a .npy file.
 * @param {ArrayBuffer} buffer the file's bytes
 * @returns {{shape: number[], data: Float32Array}}
 * @throws {Error} not a .npy file, or not a C-order little-endian float32 array
 */
export function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
  if (bytes.length < 10 || !magic.every((b, i) => bytes[i] === b)) {
    throw new Error("not a .npy file (the first bytes are not \\x93NUMPY)");
  }
  const major = bytes[6];
  const view = new DataView(buffer);
  const headerLength = major >= 2 ? view.getUint32(8, true) : view.getUint16(8, true);
  const headerStart = major >= 2 ? 12 : 10;
  const header = new TextDecoder("latin1").decode(bytes.subarray(headerStart, headerStart + headerLength));
  const descr = /'descr':\s*'([^']+)'/.exec(header);
  const order = /'fortran_order':\s*(True|False)/.exec(header);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !order || !shapeText) throw new Error(`cannot read the .npy header ${JSON.stringify(header)}`);
  if (descr[1] !== "<f4") throw new Error(`expected a float32 array ('<f4'), got dtype '${descr[1]}'`);
  if (order[1] !== "False") throw new Error("expected a C-order array, got fortran_order=True");
  const shape = shapeText[1].split(",").map((s) => s.trim()).filter((s) => s.length).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const offset = headerStart + headerLength;
  if (buffer.byteLength - offset < 4 * count) {
    throw new Error(`the .npy file is truncated: shape (${shape.join(", ")}) needs ${4 * count} bytes of data`);
  }
  return { shape, data: new Float32Array(buffer.slice(offset, offset + 4 * count)) };
}
