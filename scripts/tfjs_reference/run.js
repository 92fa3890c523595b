// Run a TensorFlow.js graph model (model.json + .bin shards) on the pure-JS CPU backend: the
// original runtime that facecure/extractors/tfjs_graph.py is checked against. Offline: a custom
// IOHandler reads the files with fs (tf.loadGraphModel(url) would fetch).
//   usage: node run.js MODEL.json INPUT.f32 N,H,W,C OUTPUT_NODE[,OUTPUT_NODE...] OUT_PREFIX
// INPUT.f32: raw little-endian float32, NHWC, already preprocessed. Writes OUT_PREFIX.<i>.f32 per
// output (raw float32) and OUT_PREFIX.json ({outputs: [{name, shape, file}], tfjs, backend}).
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

function fileHandler(modelPath) {
  return {
    load: async () => {
      const model = JSON.parse(fs.readFileSync(modelPath, 'utf8'));
      const dir = path.dirname(modelPath);
      const weightSpecs = [];
      const shards = [];
      for (const group of model.weightsManifest) {
        weightSpecs.push(...group.weights);
        for (const p of group.paths) shards.push(fs.readFileSync(path.join(dir, p)));
      }
      const all = Buffer.concat(shards);
      return {
        modelTopology: model.modelTopology, format: model.format, generatedBy: model.generatedBy,
        convertedBy: model.convertedBy, signature: model.signature,
        userDefinedMetadata: model.userDefinedMetadata, weightSpecs,
        weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
      };
    },
  };
}

async function main() {
  const [modelPath, inputPath, shapeArg, outputsArg, outPrefix] = process.argv.slice(2);
  if (!outPrefix) throw new Error('usage: node run.js MODEL.json INPUT.f32 N,H,W,C OUTPUTS OUT_PREFIX');
  await tf.setBackend('cpu');
  const model = await tf.loadGraphModel(fileHandler(modelPath));
  const shape = shapeArg.split(',').map(Number);
  const raw = fs.readFileSync(inputPath);
  const data = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const input = tf.tensor(data, shape, 'float32');
  const names = outputsArg.split(',');
  let results = model.execute({ [model.inputs[0].name]: input }, names);
  if (!Array.isArray(results)) results = [results];
  const outputs = [];
  results.forEach((t, i) => {
    const file = `${outPrefix}.${i}.f32`;
    fs.writeFileSync(file, Buffer.from(t.dataSync().buffer));
    outputs.push({ name: names[i], shape: t.shape, file: path.basename(file) });
  });
  fs.writeFileSync(`${outPrefix}.json`, JSON.stringify(
    { outputs, tfjs: tf.version.tfjs, backend: tf.getBackend() }, null, 1));
}

main().catch((err) => { console.error(err.stack || String(err)); process.exit(1); });
