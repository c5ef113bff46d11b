package org.ekdedge.demo

import org.json.JSONArray
import org.json.JSONObject

/**
 * contract.json: the interface between this app and the model it ships. The Python test suite
 * (tests/test_android_contract.py) checks the same file against the same model, so a renamed
 * input or a changed dtype fails CI instead of failing here at run time.
 */
data class TensorSpec(val name: String, val dtype: String, val shape: List<Any>)

data class TranslatorContract(
    val modelDir: String,
    val modelFile: String,
    val manifestFile: String,
    val inputs: List<TensorSpec>,
    val outputs: List<TensorSpec>,
    val options: Map<String, Int>,
    /** onnxruntime graph optimisation level the model asks for: "basic" for portable numerics. */
    val graphOptimizationLevel: String,
) {
    /** The single string input (the texts to translate). */
    val textInput: TensorSpec get() = inputs.single { it.dtype == "string" }

    /** The string output holding one translation per input text. */
    val translationOutput: TensorSpec get() = outputs.first { it.dtype == "string" }

    companion object {
        const val ASSET_NAME = "contract.json"

        fun parse(json: String): TranslatorContract {
            val root = JSONObject(json)
            val model = root.getJSONObject("model")
            val options = root.getJSONObject("options")
            return TranslatorContract(
                modelDir = model.getString("dir"),
                modelFile = model.getString("file"),
                manifestFile = model.getString("manifest"),
                inputs = specs(root.getJSONArray("inputs")),
                outputs = specs(root.getJSONArray("outputs")),
                options = options.keys().asSequence().associateWith { options.getInt(it) },
                graphOptimizationLevel = root.optJSONObject("session")?.optString("graph_optimization_level", "all")
                    ?: "all",
            )
        }

        private fun specs(array: JSONArray): List<TensorSpec> = (0 until array.length()).map { i ->
            val spec = array.getJSONObject(i)
            val shape = spec.getJSONArray("shape")
            TensorSpec(spec.getString("name"), spec.getString("dtype"), (0 until shape.length()).map { shape.get(it) })
        }
    }
}
