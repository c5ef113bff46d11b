package org.ekdedge.demo

import ai.onnxruntime.OnnxJavaType
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import ai.onnxruntime.TensorInfo
import ai.onnxruntime.extensions.OrtxPackage
import java.io.File
import java.nio.IntBuffer

/**
 * The one-file model: texts in, translations out, tokenizer and beam search inside the graph,
 * so a translation is one [OrtSession.run] call with the inputs the contract names.
 */
class Translator(modelFile: File, private val contract: TranslatorContract) : AutoCloseable {

    private val env = OrtEnvironment.getEnvironment()
    private val session: OrtSession

    init {
        val options = OrtSession.SessionOptions().apply {
            registerCustomOpLibrary(OrtxPackage.getLibraryPath())
            setIntraOpNumThreads(Runtime.getRuntime().availableProcessors().coerceAtMost(4))
            // Portable numerics: nothing fused into per-architecture kernels, so the phone decodes
            // the tokens the x86 tests checked (ekd_edge/export/portable.py).
            if (contract.graphOptimizationLevel == "basic") {
                setOptimizationLevel(OrtSession.SessionOptions.OptLevel.BASIC_OPT)
            }
        }
        session = env.createSession(modelFile.absolutePath, options)
        checkAgainstContract()
    }

    private var closed = false

    /**
     * The translation of [text] and the time the model took, in milliseconds. Synchronized with
     * [close]: the session is never closed while a run uses it, and never used once closed.
     */
    @Synchronized
    fun translate(text: String): Pair<String, Long> {
        check(!closed) { "The translator is closed." }
        val started = System.nanoTime()
        val inputs = contract.inputs.associate { spec -> spec.name to tensorFor(spec, text) }
        try {
            session.run(inputs, setOf(contract.translationOutput.name)).use { result ->
                val output = result.get(contract.translationOutput.name).get() as OnnxTensor
                @Suppress("UNCHECKED_CAST")
                val translations = output.value as Array<String>
                return translations.single() to (System.nanoTime() - started) / 1_000_000
            }
        } finally {
            inputs.values.forEach { it.close() }
        }
    }

    private fun tensorFor(spec: TensorSpec, text: String): OnnxTensor = when (spec.dtype) {
        "string" -> OnnxTensor.createTensor(env, arrayOf(text), longArrayOf(1))
        "int32" -> {
            val value = contract.options[spec.name]
                ?: throw ModelUnavailableException("contract.json has no option for input ${spec.name}.")
            OnnxTensor.createTensor(env, IntBuffer.wrap(intArrayOf(value)), longArrayOf(1))
        }
        else -> throw ModelUnavailableException("contract.json: unsupported dtype ${spec.dtype} for ${spec.name}.")
    }

    /** Names and dtypes the model declares must be the contract's, in order. */
    private fun checkAgainstContract() {
        fun check(kind: String, declared: Map<String, ai.onnxruntime.NodeInfo>, specs: List<TensorSpec>) {
            if (declared.keys.toList() != specs.map { it.name }) {
                throw ModelUnavailableException(
                    "The model's $kind ${declared.keys} do not match contract.json (${specs.map { it.name }})."
                )
            }
            for (spec in specs) {
                val type = (declared.getValue(spec.name).info as TensorInfo).type
                if (type != javaType(spec.dtype)) {
                    throw ModelUnavailableException("The model's ${spec.name} is $type, contract.json says ${spec.dtype}.")
                }
            }
        }
        check("inputs", session.inputInfo, contract.inputs)
        check("outputs", session.outputInfo, contract.outputs)
    }

    private fun javaType(dtype: String): OnnxJavaType = when (dtype) {
        "string" -> OnnxJavaType.STRING
        "int32" -> OnnxJavaType.INT32
        "int64" -> OnnxJavaType.INT64
        "float32" -> OnnxJavaType.FLOAT
        else -> OnnxJavaType.UNKNOWN
    }

    @Synchronized
    override fun close() {
        if (closed) return
        closed = true
        session.close()
    }
}
