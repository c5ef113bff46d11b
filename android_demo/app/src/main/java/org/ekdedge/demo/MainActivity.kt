package org.ekdedge.demo

import android.os.Bundle
import android.widget.Button
import android.widget.EditText
import android.widget.TextView
import androidx.activity.viewModels
import androidx.appcompat.app.AppCompatActivity
import androidx.lifecycle.Lifecycle
import androidx.lifecycle.lifecycleScope
import androidx.lifecycle.repeatOnLifecycle
import kotlinx.coroutines.launch

class MainActivity : AppCompatActivity() {

    private val viewModel: TranslateViewModel by viewModels()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        val status = findViewById<TextView>(R.id.status)
        val input = findViewById<EditText>(R.id.input)
        val button = findViewById<Button>(R.id.translate)
        val output = findViewById<TextView>(R.id.output)
        val latency = findViewById<TextView>(R.id.latency)

        button.setOnClickListener { viewModel.translate(input.text.toString()) }

        lifecycleScope.launch {
            repeatOnLifecycle(Lifecycle.State.STARTED) {
                viewModel.state.collect { state ->
                    when (state) {
                        UiState.Loading -> {
                            status.setText(R.string.loading_model)
                            button.isEnabled = false
                        }
                        is UiState.Failed -> {
                            status.text = state.message
                            button.isEnabled = false
                        }
                        is UiState.Ready -> {
                            status.text = readyText(state)
                            button.isEnabled = true
                        }
                        is UiState.Translating -> {
                            status.text = readyText(state.ready)
                            latency.setText(R.string.translating)
                            button.isEnabled = false
                        }
                        is UiState.TranslationFailed -> {
                            status.text = readyText(state.ready)
                            output.text = state.message
                            latency.text = ""
                            button.isEnabled = true
                        }
                        is UiState.Translated -> {
                            status.text = readyText(state.ready)
                            output.text = state.text
                            latency.text = getString(R.string.latency, state.latencyMs)
                            button.isEnabled = true
                        }
                    }
                }
            }
        }
    }

    private fun readyText(ready: UiState.Ready) =
        getString(R.string.model_ready, ready.variant, ready.sizeMb, ready.loadMs)
}
