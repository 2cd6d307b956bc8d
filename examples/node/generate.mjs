// Generate a sematlas brain map from Node.js with the released ONNX prior and decoder.
//
//   node generate.mjs RELEASE_DIR QUERY YEAR OUTPUT.nii [MODEL]
//
// RELEASE_DIR is data/release/<profile>/ (or the unpacked archive). QUERY is a task
// category (e.g. pain) or a topic profile, topics:INDEX=WEIGHT,... (e.g. topics:32=1,9=0.5,
// LDA-50 topic indices). The metadata vector m is built exactly as metadata_encoder.json
// describes: the standardised topic weights (a category's mean profile, or the query's
// weights normalised and blended with the corpus profile), or the task one-hot of an
// encoder that reads categories; standardised year; standardised log peak count (at its
// training mean); space one-hot (MNI); standardised log sample size (0 = unknown). The
// latent code is the prior mean z = mu(m) of the prior graph (z = 0 for a model without
// one). The map of the widest kernel is written as an uncompressed NIfTI-1 file in MNI152
// space, readable by any neuroimaging tool.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import ort from "onnxruntime-node";

export function topicProfile(spec, query) {
  // A category's mean topic profile, or the weights of "topics:32=1,9=0.5" blended with the corpus profile.
  if (!query.startsWith("topics:")) {
    if (!(query in spec.category_profiles))
      throw new Error(`unknown task ${JSON.stringify(query)}; allowed: ${spec.categories.join(", ")}`);
    return spec.category_profiles[query];
  }
  const weights = new Array(spec.corpus_profile.length).fill(0);
  for (const item of query.slice("topics:".length).split(",")) {
    const [index, weight] = item.split("=").map(Number);
    if (!(Number.isInteger(index) && index >= 0 && index < weights.length) || !(weight >= 0))
      throw new Error(`bad topic weight ${JSON.stringify(item)}: want INDEX=WEIGHT, 0 <= INDEX < ${weights.length}, WEIGHT >= 0`);
    weights[index] += weight;
  }
  const total = weights.reduce((a, b) => a + b, 0);
  if (!(total > 0)) throw new Error("a topic profile needs a positive weight");
  return weights.map((w, k) => spec.query_blend * (w / total) + (1 - spec.query_blend) * spec.corpus_profile[k]);
}

export function metadataVector(spec, query, year) {
  const [first, last] = spec.year_range;
  if (!(year >= first && year <= last)) throw new Error(`year ${year} outside ${first}-${last} (Neurosynth v7 ends in 2018)`);
  const s = spec.stats;
  const m = new Float32Array(spec.meta_dim);
  let k = 0;
  if (spec.inputs === "topics") {
    topicProfile(spec, query).forEach((w, t) => (m[k++] = (w - spec.corpus_profile[t]) / spec.topic_std[t]));
  } else {
    const t = spec.categories.indexOf(query);
    if (t < 0) throw new Error(`unknown task ${JSON.stringify(query)}; allowed: ${spec.categories.join(", ")}`);
    m[t] = 1;
    k = spec.categories.length;
  }
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

export async function generate(releaseDir, query, year, output, model = "cbvae") {
  const spec = JSON.parse(readFileSync(join(releaseDir, "metadata_encoder.json"), "utf8"));
  const m = new ort.Tensor("float32", metadataVector(spec, query, year), [1, spec.meta_dim]);
  const priorFile = join(releaseDir, "onnx", `${model}_prior.onnx`);
  let z = new ort.Tensor("float32", new Float32Array(spec.z_dim), [1, spec.z_dim]);
  if (existsSync(priorFile)) z = (await (await ort.InferenceSession.create(priorFile)).run({ m })).mu;
  const session = await ort.InferenceSession.create(join(releaseDir, "onnx", `${model}_decoder.onnx`));
  const { map } = await session.run({ z, m });
  const [, channels, nx, ny, nz] = map.dims;
  const widest = map.data.subarray((channels - 1) * nx * ny * nz, channels * nx * ny * nz);
  writeFileSync(output, niftiBytes(widest, [nx, ny, nz], spec.affine, `sematlas ${model} ${query} ${year}`));
  return { dims: map.dims, max: widest.reduce((a, b) => Math.max(a, b), 0) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [releaseDir, query, year, output, model = "cbvae"] = process.argv.slice(2);
  if (!output) {
    console.error("usage: node generate.mjs RELEASE_DIR QUERY YEAR OUTPUT.nii [MODEL]  (QUERY: a task or topics:INDEX=WEIGHT,...)");
    process.exit(2);
  }
  const { dims, max } = await generate(releaseDir, query, Number(year), output, model);
  console.log(`wrote ${output}: ${model} map for ${query} in ${year}, decoder output ${dims.join("x")}, max ${max.toFixed(3)}`);
}
