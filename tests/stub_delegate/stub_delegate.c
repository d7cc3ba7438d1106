/*
 * A stand-in for libedgetpu.so.1, for tests on machines without an Edge TPU.
 *
 * It exports the two entry points that TFLite's load_delegate() looks up in an external delegate
 * library (the same ones libedgetpu exports), claims no nodes (so the graph runs on the CPU), and
 * appends every option it receives to the file named by $STUB_DELEGATE_LOG, so tests can prove that
 * the device spec reaches the delegate. Like libedgetpu when the requested device is absent, it returns
 * NULL for a device option whose value is listed in $STUB_DELEGATE_MISSING (comma-separated).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The leading fields of TfLiteDelegate (tensorflow/lite/core/c/common.h). The stub allocates a
 * zeroed block larger than the real struct, so any later fields read as NULL / 0. */
typedef struct StubDelegate {
    void *data_;
    int (*Prepare)(void *context, struct StubDelegate *delegate);
    void *CopyFromBufferHandle;
    void *CopyToBufferHandle;
    void *FreeBufferHandle;
    int64_t flags;
    void *opaque_delegate_builder;
    char reserved[256];
} StubDelegate;

static int stub_prepare(void *context, StubDelegate *delegate) {
    (void)context;
    (void)delegate;
    return 0; /* kTfLiteOk: replace no nodes, the CPU kernels run everything */
}

static int is_missing(const char *value) {
    const char *missing = getenv("STUB_DELEGATE_MISSING");
    if (missing == NULL || value == NULL) return 0;
    char buffer[256];
    snprintf(buffer, sizeof buffer, "%s", missing);
    for (char *item = strtok(buffer, ","); item != NULL; item = strtok(NULL, ",")) {
        if (strcmp(item, value) == 0) return 1;
    }
    return 0;
}

static void log_line(const char *text) {
    const char *path = getenv("STUB_DELEGATE_LOG");
    if (path == NULL) return;
    FILE *log = fopen(path, "a");
    if (log == NULL) return;
    fprintf(log, "%s\n", text);
    fclose(log);
}

StubDelegate *tflite_plugin_create_delegate(char **keys, char **values, size_t count,
                                            void (*report_error)(const char *)) {
    char line[512];
    snprintf(line, sizeof line, "create options=%zu", count);
    log_line(line);
    for (size_t i = 0; i < count; i++) {
        snprintf(line, sizeof line, "option %s=%s", keys[i], values[i]);
        log_line(line);
        if (strcmp(keys[i], "device") == 0 && is_missing(values[i])) {
            if (report_error != NULL) report_error("Failed to find the requested Edge TPU device");
            return NULL;
        }
    }
    StubDelegate *delegate = calloc(1, sizeof(StubDelegate));
    if (delegate != NULL) delegate->Prepare = stub_prepare;
    return delegate;
}

void tflite_plugin_destroy_delegate(StubDelegate *delegate) {
    log_line("destroy");
    free(delegate);
}
