{
  "targets": [
    {
      "target_name": "mycelite_file_lock",
      "sources": ["file_lock.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-O2"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "xcode_settings": { "OTHER_CFLAGS": ["-std=gnu11", "-Wall", "-Wextra"] },
      "conditions": [["OS=='linux'", { "libraries": ["-ldl"] }]]
    }
  ]
}
