// Generate a sematlas brain map from Node.js with the released ONNX decoder.
//
//   node generate.mjs RELEASE_DIR TASK YEAR OUTPUT.nii [MODEL]
//
// RELEASE_DIR is data/release/<profile>/ (or the unpacked archive). The metadata
// vector m is built exactly as metadata_encoder.json describes: task one-hot,
// standardised year, standardised log peak count (at its training mean), space
// one-hot (MNI), standardised log sample size (0 = unknown). The latent code is
// the prior mean (z = 0). The map of the widest kernel is written as an
// uncompressed NIfTI-1 file in MNI152 space, readable by any neuroimaging tool.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import ort from "onnxruntime-node";

export function metadataVector(spec, task, year) {
  const t = spec.categories.indexOf(task);
  if (t < 0) throw new Error(`unknown task ${JSON.stringify(task)}; allowed: ${spec.categories.join(", ")}`);
  const [first, last] = spec.year_range;
  if (!(year >= first && year <= last)) throw new Error(`year ${year} outside ${first}-${last} (Neurosynth v7 ends in 2018)`);
  const s = spec.stats;
  const m = new Float32Array(spec.meta_dim);
  m[t] = 1;
  let k = spec.categories.length;
  m[k++] = (year - s.year_mean) / s.year_std;
  m[k++] = 0; // log peak count at its training mean
  m[k + spec.spaces.indexOf("MNI")] = 1;
  // the remaining entry, the standardised log sample size, stays 0: unknown
  return m;
}

export function niftiBytes(volume, shape, affine, description) {
  // NIfTI-1 single file: 348-byte header, 4 bytes of (empty) extension flag, float32 data, x fastest.
  const [nx, ny, nz] = shape;
  const buffer = Buffer.alloc(352 + 4 * nx * ny * nz);
  buffer.writeInt32LE(348, 0);
  [3, nx, ny, nz, 1, 1, 1, 1].forEach((d, i) => buffer.writeInt16LE(d, 40 + 2 * i));
  buffer.writeInt16LE(16, 70); // datatype float32
  buffer.writeInt16LE(32, 72); // bits per voxel
  [1, affine[0][0], affine[1][1], affine[2][2], 1, 1, 1, 1].forEach((p, i) => buffer.writeFloatLE(p, 76 + 4 * i));
  buffer.writeFloatLE(352, 108); // vox_offset
  buffer.writeFloatLE(1, 112); // scl_slope
  buffer.writeUInt8(2, 123); // xyzt_units: mm
  buffer.write(description.slice(0, 79), 148, "latin1");
  buffer.writeInt16LE(4, 252); // qform_code: MNI152
  buffer.writeInt16LE(4, 254); // sform_code: MNI152
  [affine[0][3], affine[1][3], affine[2][3]].forEach((o, i) => buffer.writeFloatLE(o, 268 + 4 * i));
  for (let r = 0; r < 3; r++) affine[r].forEach((a, c) => buffer.writeFloatLE(a, 280 + 16 * r + 4 * c));
  buffer.write("n+1\0", 344, "latin1");
  // The decoder's output is (D, H, W) in C order (W fastest); NIfTI stores x (D) fastest.
  for (let i = 0; i < nx; i++)
    for (let j = 0; j < ny; j++)
      for (let k = 0; k < nz; k++) buffer.writeFloatLE(volume[(i * ny + j) * nz + k], 352 + 4 * (i + nx * (j + ny * k)));
  return buffer;
}

export async function generate(releaseDir, task, year, output, model = "cbvae") {
  const spec = JSON.parse(readFileSync(join(releaseDir, "metadata_encoder.json"), "utf8"));
  const session = await ort.InferenceSession.create(join(releaseDir, "onnx", `${model}_decoder.onnx`));
  const z = new ort.Tensor("float32", new Float32Array(spec.z_dim), [1, spec.z_dim]);
  const m = new ort.Tensor("float32", metadataVector(spec, task, year), [1, spec.meta_dim]);
  const { map } = await session.run({ z, m });
  const [, channels, nx, ny, nz] = map.dims;
  const widest = map.data.subarray((channels - 1) * nx * ny * nz, channels * nx * ny * nz);
  writeFileSync(output, niftiBytes(widest, [nx, ny, nz], spec.affine, `sematlas ${model} ${task} ${year}`));
  return { dims: map.dims, max: widest.reduce((a, b) => Math.max(a, b), 0) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [releaseDir, task, year, output, model = "cbvae"] = process.argv.slice(2);
  if (!output) {
    console.error("usage: node generate.mjs RELEASE_DIR TASK YEAR OUTPUT.nii [MODEL]");
    process.exit(2);
  }
  const { dims, max } = await generate(releaseDir, task, Number(year), output, model);
  console.log(`wrote ${output}: ${model} map for ${task} in ${year}, decoder output ${dims.join("x")}, max ${max.toFixed(3)}`);
}
