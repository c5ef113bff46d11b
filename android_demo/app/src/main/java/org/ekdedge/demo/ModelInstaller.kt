package org.ekdedge.demo

import android.content.Context
import org.json.JSONObject
import java.io.File
import java.io.FileNotFoundException
import java.security.MessageDigest

/** A problem with the bundled model that the user should see as one clear sentence. */
class ModelUnavailableException(message: String) : Exception(message)

/**
 * Copies the model bundle from the APK's assets to the app's files (once per APK version) and
 * checks every file against manifest.json. ONNX Runtime then opens model.onnx by path and maps
 * it natively: reading a model into a Java byte array first is a known out-of-memory trap.
 */
class ModelInstaller(private val context: Context, private val contract: TranslatorContract) {

    private val target = File(context.filesDir, contract.modelDir)

    /** The verified model file, installing it from the assets if needed. */
    fun install(): File {
        val stamp = File(target, ".installed-version")
        val version = context.packageManager.getPackageInfo(context.packageName, 0).lastUpdateTime.toString()
        if (!stamp.isFile || stamp.readText() != version) {
            copyAssets()
            stamp.writeText(version)
        }
        verify()
        return File(target, contract.modelFile)
    }

    private fun copyAssets() {
        val names = context.assets.list(contract.modelDir).orEmpty()
        if (contract.modelFile !in names || contract.manifestFile !in names) {
            throw ModelUnavailableException(
                "The model is missing from the app: assets/${contract.modelDir}/ must hold " +
                    "${contract.modelFile} and ${contract.manifestFile} (see android_demo/README.md)."
            )
        }
        target.deleteRecursively()
        target.mkdirs()
        for (name in names) {
            val partial = File(target, "$name.partial")
            context.assets.open("${contract.modelDir}/$name").use { input ->
                partial.outputStream().use { output -> input.copyTo(output, bufferSize = 1 shl 16) }
            }
            if (!partial.renameTo(File(target, name))) {
                throw ModelUnavailableException("Could not install $name into the app's files.")
            }
        }
    }

    /** Every file listed in the manifest exists with its recorded size and sha256. */
    private fun verify() {
        val manifestFile = File(target, contract.manifestFile)
        val manifest = try {
            JSONObject(manifestFile.readText())
        } catch (e: FileNotFoundException) {
            throw ModelUnavailableException("The model's ${contract.manifestFile} is missing.")
        }
        val files = manifest.getJSONArray("files")
        val listed = (0 until files.length()).map { files.getJSONObject(it) }
        if (listed.none { it.getString("path") == contract.modelFile }) {
            throw ModelUnavailableException("${contract.manifestFile} does not list ${contract.modelFile}.")
        }
        for (entry in listed) {
            val path = entry.getString("path")
            val file = File(target, path)
            if (!file.isFile) throw ModelUnavailableException("The model file $path is missing.")
            if (file.length() != entry.getLong("size") || sha256(file) != entry.getString("sha256")) {
                throw ModelUnavailableException(
                    "The model file $path fails its checksum: the bundle is damaged or was changed after export."
                )
            }
        }
        sizeBytes = manifest.getLong("total_size")
        variant = manifest.optString("variant", "unknown")
    }

    var sizeBytes: Long = 0
        private set
    var variant: String = "unknown"
        private set

    private fun sha256(file: File): String {
        val digest = MessageDigest.getInstance("SHA-256")
        file.inputStream().use { input ->
            val buffer = ByteArray(1 shl 16)
            while (true) {
                val read = input.read(buffer)
                if (read < 0) break
                digest.update(buffer, 0, read)
            }
        }
        return digest.digest().joinToString("") { "%02x".format(it) }
    }
}
