package org.ekdedge.demo

import android.app.Application
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

sealed interface UiState {
    data object Loading : UiState
    data class Ready(val variant: String, val sizeMb: Double, val loadMs: Long) : UiState
    data class Failed(val message: String) : UiState
    data class Translating(val ready: Ready) : UiState
    data class Translated(val ready: Ready, val text: String, val latencyMs: Long) : UiState
    /** One translation failed; the model stays loaded and usable. */
    data class TranslationFailed(val ready: Ready, val message: String) : UiState
}

/** Loads the model on a background thread and runs translations there; the UI only observes. */
class TranslateViewModel(application: Application) : AndroidViewModel(application) {

    private val _state = MutableStateFlow<UiState>(UiState.Loading)
    val state: StateFlow<UiState> = _state

    @Volatile private var translator: Translator? = null
    private var ready: UiState.Ready? = null

    // The jobs that use the session. Cancelling a coroutine does not stop a native
    // OrtSession.run (or the session being created), so onCleared waits for both before closing.
    private val loading: Job = viewModelScope.launch {
        _state.value = withContext(Dispatchers.IO) { load() }
    }
    private var translation: Job? = null

    private fun load(): UiState = try {
        val started = System.nanoTime()
        val app = getApplication<Application>()
        val contract = app.assets.open(TranslatorContract.ASSET_NAME).use {
            TranslatorContract.parse(it.readBytes().decodeToString())
        }
        val installer = ModelInstaller(app, contract)
        val modelFile = installer.install()
        translator = Translator(modelFile, contract)
        UiState.Ready(installer.variant, installer.sizeBytes / 1e6, (System.nanoTime() - started) / 1_000_000)
            .also { ready = it }
    } catch (e: ModelUnavailableException) {
        UiState.Failed(e.message ?: "The model is unavailable.")
    } catch (e: java.io.FileNotFoundException) {
        UiState.Failed("The app was built without ${TranslatorContract.ASSET_NAME}; see android_demo/README.md.")
    } catch (e: Exception) {
        UiState.Failed("The model could not be loaded: ${e.message}")
    }

    fun translate(text: String) {
        val model = translator ?: return
        val current = ready ?: return
        if (text.isBlank() || translation?.isActive == true) return
        _state.value = UiState.Translating(current)
        translation = viewModelScope.launch {
            _state.value = withContext(Dispatchers.Default) {
                try {
                    val (translated, latency) = model.translate(text.trim())
                    UiState.Translated(current, translated, latency)
                } catch (e: Exception) {
                    UiState.TranslationFailed(current, "Translation failed: ${e.message}")
                }
            }
        }
    }

    /**
     * viewModelScope is already cancelled here, but a translation (or the load) may still be inside
     * native code that uses the session: close it only once both jobs have completed. The wait
     * runs off the main thread, in a scope of its own (the view model's is gone).
     */
    override fun onCleared() {
        val running = listOfNotNull(loading, translation)
        closer.launch {
            running.forEach { it.join() }
            translator?.close()
            translator = null
        }
    }

    private companion object {
        /** Outlives any one view model: closes sessions after their last translation has returned. */
        val closer = CoroutineScope(SupervisorJob() + Dispatchers.IO)
    }
}
