/*
 * verify_and_flash: verifies a signed veriflash package, then flashes it to a device,
 * printing progress. The C API's whole life cycle in one small program.
 *
 *   verify_and_flash [OPTIONS] TRUST PACKAGE TARGET
 *
 *   TRUST    a PEM public key (or root certificate), or a directory of them
 *   PACKAGE  the package file
 *   TARGET   the device, e.g. file:/tmp/device.img (a file-backed reference device) or
 *            mdm9x07:serial:/dev/ttyUSB0 (a modem in download mode)
 *
 *   --no-clock         do not check certificate dates (by default the system clock is
 *                      trusted, as for the `veriflash` command)
 *   --threshold K      require K distinct trusted signers
 *   --state-dir DIR    journals, backups and per-device records (default: none)
 *   --config-dir DIR   configuration files such as mdm9x07-products.toml (default: none)
 *   --reconnect SECS   how long to wait for a modem that drops off (default 60, 0: never)
 *
 * The options are the `veriflash` command's, mapped to veriflash_trust_set_time,
 * veriflash_trust_set_threshold and a veriflash_options handle.
 *
 * Exit status: 0 on success, otherwise the veriflash_result code (the same numbers as the
 * `veriflash` command's exit statuses), 2 for a usage error.
 *
 * The package is verified from its path, then flashed from its path too (so an install cut
 * off by a modem that drops off can run again), or, with --from-callback, from a read
 * callback over a FILE*, to show both ways of opening one.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "veriflash.h"

/* Prints the calling thread's last error as `error[CODE name]: message` and its remedy. */
static int report_failure(const char *what, veriflash_result rc) {
    char message[VERIFLASH_MESSAGE_MAX];
    char remedy[VERIFLASH_MESSAGE_MAX];
    size_t written = 0;
    if (veriflash_last_error_message(message, sizeof message, &written) != VERIFLASH_OK) {
        message[0] = '\0';
    }
    if (veriflash_last_error_remedy(remedy, sizeof remedy, &written) != VERIFLASH_OK) {
        remedy[0] = '\0';
    }
    fprintf(stderr, "error[%" PRIu32 " %s]: %s: %s\n  remedy: %s\n", rc,
            veriflash_result_name(rc), what, message, remedy);
    return (int)rc;
}

/* What the progress callback keeps between events. */
struct progress {
    unsigned next_percent;
    unsigned events;
};

static int on_event(void *userdata, const veriflash_event *event) {
    struct progress *progress = userdata;
    progress->events++;
    switch (event->kind) {
    case VERIFLASH_EVENT_PHASE_FINISHED:
        printf("  %-10s ok\n", veriflash_phase_name(event->phase));
        break;
    case VERIFLASH_EVENT_PROGRESS: {
        unsigned percent =
            event->total == 0 ? 100u : (unsigned)(event->done * 100u / event->total);
        if (percent >= progress->next_percent) {
            printf("  flash      %3u%%  %" PRIu64 "/%" PRIu64 " bytes (%s)\n", percent,
                   event->done, event->total, event->image);
            progress->next_percent = (percent / 25u + 1u) * 25u;
        }
        break;
    }
    case VERIFLASH_EVENT_WARNING:
        printf("  warning: %s\n", event->message);
        break;
    case VERIFLASH_EVENT_RECONNECTING:
        printf("  connection lost (%s: %s): waiting up to %" PRIu64 " s for the device, "
               "try %" PRIu32 " of %" PRIu32 "\n",
               veriflash_result_name(event->code), event->message, event->timeout_ms / 1000u,
               event->attempt, event->max_attempts);
        progress->next_percent = 0; /* the install runs again from the start */
        break;
    case VERIFLASH_EVENT_RECONNECTED:
        printf("  device back: installing again\n");
        break;
    case VERIFLASH_EVENT_FINISHED:
        printf("  finished   %s\n", veriflash_result_name(event->code));
        break;
    default:
        break;
    }
    fflush(stdout);
    return VERIFLASH_CONTINUE; /* VERIFLASH_CANCEL would stop before the next chunk */
}

/* A veriflash_read_cb over a stdio stream. */
static int read_file(void *userdata, uint8_t *buf, size_t len, size_t *out_read) {
    FILE *file = userdata;
    size_t n = fread(buf, 1, len, file);
    if (n == 0 && ferror(file)) {
        return errno != 0 ? errno : EIO;
    }
    *out_read = n;
    return 0;
}

static void print_report(const veriflash_report *report) {
    const char *product = NULL, *version = NULL, *package_id = NULL;
    uint64_t security_version = 0;
    size_t images = 0;
    if (veriflash_report_product(report, &product) != VERIFLASH_OK ||
        veriflash_report_version(report, &version) != VERIFLASH_OK ||
        veriflash_report_package_id(report, &package_id) != VERIFLASH_OK ||
        veriflash_report_security_version(report, &security_version) != VERIFLASH_OK ||
        veriflash_report_image_count(report, &images) != VERIFLASH_OK) {
        return;
    }
    printf("verified: %s %s (security version %" PRIu64 "), package %.16s..., %zu images\n",
           product, version, security_version, package_id, images);
    for (size_t i = 0; i < images; i++) {
        veriflash_image_info info;
        if (veriflash_report_image(report, i, &info) == VERIFLASH_OK) {
            printf("  image %-8s -> %-8s %8" PRIu64 " bytes, %" PRIu64 " chunks, sha256 %.16s...\n",
                   info.name, info.partition, info.size, info.chunks, info.sha256);
        }
    }
}

static void print_status(const char *target) {
    veriflash_status *status = NULL;
    veriflash_result rc = veriflash_device_status(target, &status);
    if (rc != VERIFLASH_OK) {
        report_failure("reading the device status", rc);
        return;
    }
    veriflash_slot slot = VERIFLASH_SLOT_NONE;
    uint64_t floor = 0;
    const char *version = NULL;
    if (veriflash_status_active_slot(status, &slot) == VERIFLASH_OK &&
        veriflash_status_security_floor(status, &floor) == VERIFLASH_OK &&
        veriflash_status_installed_version(status, &version) == VERIFLASH_OK) {
        printf("device: active slot %s, anti-rollback floor %" PRIu64 ", installed %s\n",
               slot == VERIFLASH_SLOT_A ? "a" : slot == VERIFLASH_SLOT_B ? "b" : "-", floor,
               version != NULL ? version : "(none)");
    }
    veriflash_status_free(status);
}

static int usage(const char *program) {
    fprintf(stderr,
            "usage: %s [--no-clock] [--threshold K] [--state-dir DIR] [--config-dir DIR]\n"
            "       [--reconnect SECS] [--from-callback] TRUST PACKAGE TARGET\n",
            program);
    return 2;
}

/* Parses a decimal number into *out; false when it is not one. */
static bool parse_number(const char *text, unsigned long long *out) {
    char *end = NULL;
    errno = 0;
    *out = strtoull(text, &end, 10);
    return errno == 0 && end != text && *end == '\0' && text[0] != '-';
}

int main(int argc, char **argv) {
    const char *program = argv[0];
    bool no_clock = false, from_callback = false;
    const char *state_dir = NULL, *config_dir = NULL, *threshold_arg = NULL,
               *reconnect_arg = NULL;
    int arg = 1;
    for (; arg < argc && strncmp(argv[arg], "--", 2) == 0; arg++) {
        const char *flag = argv[arg];
        if (strcmp(flag, "--no-clock") == 0) {
            no_clock = true;
        } else if (strcmp(flag, "--from-callback") == 0) {
            from_callback = true;
        } else if (arg + 1 < argc && strcmp(flag, "--threshold") == 0) {
            threshold_arg = argv[++arg];
        } else if (arg + 1 < argc && strcmp(flag, "--state-dir") == 0) {
            state_dir = argv[++arg];
        } else if (arg + 1 < argc && strcmp(flag, "--config-dir") == 0) {
            config_dir = argv[++arg];
        } else if (arg + 1 < argc && strcmp(flag, "--reconnect") == 0) {
            reconnect_arg = argv[++arg];
        } else {
            return usage(program);
        }
    }
    if (argc - arg != 3) {
        return usage(program);
    }
    unsigned long long threshold = 0, reconnect = 60;
    if ((threshold_arg != NULL && !parse_number(threshold_arg, &threshold)) ||
        (reconnect_arg != NULL && !parse_number(reconnect_arg, &reconnect))) {
        return usage(program);
    }
    const char *trust_path = argv[arg], *package_path = argv[arg + 1], *target = argv[arg + 2];

    printf("veriflash %s, ABI %" PRIu32 "\n", veriflash_version(), veriflash_abi_version());
    if (veriflash_abi_version() != VERIFLASH_ABI_VERSION) {
        fprintf(stderr, "error: library ABI %" PRIu32 ", header ABI %d\n",
                veriflash_abi_version(), VERIFLASH_ABI_VERSION);
        return 1;
    }

    int exit_code = 0;
    veriflash_trust *trust = NULL;
    veriflash_options *options = NULL;
    veriflash_package *package = NULL;
    veriflash_report *report = NULL;
    FILE *file = NULL;
    veriflash_result rc;

    /* The trust configuration: anchors, clock, threshold (the command's --trust, --no-clock,
     * --threshold). */
    if ((rc = veriflash_trust_load(trust_path, &trust)) != VERIFLASH_OK) {
        exit_code = report_failure("loading the trust anchors", rc);
        goto done;
    }
    if (no_clock && (rc = veriflash_trust_set_time(trust, VERIFLASH_TRUSTED_TIME_NONE, 0)) !=
                        VERIFLASH_OK) {
        exit_code = report_failure("--no-clock", rc);
        goto done;
    }
    if ((rc = veriflash_trust_set_threshold(trust, (size_t)threshold)) != VERIFLASH_OK) {
        exit_code = report_failure("--threshold", rc);
        goto done;
    }

    /* How the install runs: where the plugins keep state and read configuration, and how
     * long a device that drops off is waited for. Unset: none, none, 60 s. */
    if ((rc = veriflash_options_new(&options)) != VERIFLASH_OK ||
        (rc = veriflash_options_set_state_dir(options, state_dir)) != VERIFLASH_OK ||
        (rc = veriflash_options_set_config_dir(options, config_dir)) != VERIFLASH_OK ||
        (rc = veriflash_options_set_reconnect_wait(options, reconnect)) != VERIFLASH_OK) {
        exit_code = report_failure("setting the install options", rc);
        goto done;
    }

    /* 1. Verify: signatures, then every payload chunk. Nothing is written. */
    if ((rc = veriflash_package_open(package_path, &package)) != VERIFLASH_OK) {
        exit_code = report_failure("opening the package", rc);
        goto done;
    }
    if ((rc = veriflash_package_verify(package, trust, &report)) != VERIFLASH_OK) {
        exit_code = report_failure("verifying the package", rc);
        goto done;
    }
    print_report(report);
    veriflash_report_free(report);
    report = NULL;
    /* A package is read once: the verified one is spent; open it again to flash it. */
    veriflash_package_free(package);
    package = NULL;

    /* 2. Flash, with progress: from the path, or through a read callback. */
    print_status(target);
    if (from_callback) {
        file = fopen(package_path, "rb");
        if (file == NULL) {
            fprintf(stderr, "error: %s: %s\n", package_path, strerror(errno));
            exit_code = (int)VERIFLASH_IO;
            goto done;
        }
        rc = veriflash_package_open_reader(read_file, file, &package);
    } else {
        rc = veriflash_package_open(package_path, &package);
    }
    if (rc != VERIFLASH_OK) {
        exit_code = report_failure("opening the package", rc);
        goto done;
    }
    printf("flashing %s\n", target);
    struct progress progress = {0, 0};
    rc = veriflash_flash_with_options(package, trust, options, target, on_event, &progress,
                                      &report);
    if (rc != VERIFLASH_OK) {
        exit_code = report_failure("flashing", rc);
        print_status(target);
        goto done;
    }
    printf("installed after %u events\n", progress.events);
    print_status(target);

done:
    veriflash_report_free(report);
    veriflash_package_free(package); /* before closing the stream its callback reads */
    if (file != NULL) {
        fclose(file);
    }
    veriflash_options_free(options);
    veriflash_trust_free(trust);
    return exit_code;
}
