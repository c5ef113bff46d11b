plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "org.ekdedge.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.ekdedge.demo"
        minSdk = 24
        targetSdk = 35
        versionCode = 1
        versionName = "1.0"
        // The model ships as prebuilt arm64/x86_64 native code in the ONNX Runtime AARs.
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }

    // model.onnx is copied to the app's files and opened by path; compressing it in the APK
    // would only cost time on first start.
    androidResources { noCompress += listOf("onnx") }
}

dependencies {
    // Full ONNX Runtime (not the "mobile" build): the model uses the com.microsoft BeamSearch op.
    implementation("com.microsoft.onnxruntime:onnxruntime-android:1.22.0")
    // SentencepieceTokenizer / SentencepieceDecoder / StringStrip (ai.onnx.contrib domain).
    implementation("com.microsoft.onnxruntime:onnxruntime-extensions-android:0.13.0")
    implementation("androidx.appcompat:appcompat:1.7.0")
    implementation("androidx.activity:activity-ktx:1.9.3")
    implementation("androidx.lifecycle:lifecycle-viewmodel-ktx:2.8.7")
    implementation("androidx.lifecycle:lifecycle-runtime-ktx:2.8.7")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.9.0")
}
