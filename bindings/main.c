/*
** moonwire: the command-line entry point. Dispatches to one subcommand per file.
*/
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const mw_command_t commands[] = {
    {"run", mw_cmd_run, "run a device app connected to the broker", mw_usage_run},
    {"script", mw_cmd_script, "run a Lua script with the moonwire modules, without a broker", mw_usage_script},
    {"shadow-service", mw_cmd_shadow_service, "serve AWS IoT Device Shadow topics for every thing (local stand-in)",
     mw_usage_shadow_service},
    {"se", mw_cmd_se, "the OPTIGA Trust M: info, random, keygen, pubkey, csr, cert, data, metadata, counter",
     mw_usage_se},
    {"pkcs11", mw_cmd_pkcs11, "keys in a PKCS#11 token: tokens, objects, keygen, pubkey, info, csr", mw_usage_pkcs11},
    {"repl", mw_cmd_repl, "a local interactive Lua prompt with the moonwire modules", mw_usage_repl},
    {"attach", mw_cmd_attach, "a Lua prompt inside a running 'moonwire run'", mw_usage_attach},
    {"provision", mw_cmd_provision, "run a provisioning flow: new key, certificate, thing, verified switch-over",
     mw_usage_provision},
    {"provisioning-service", mw_cmd_provisioning_service,
     "serve AWS IoT Fleet Provisioning on the local broker (certificates, templates, things)",
     mw_usage_provisioning_service},
    {"outbox", mw_cmd_outbox, "the durable outbox: list, show, retry or drop dead letters", mw_usage_outbox},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

int mw_cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fputs("moonwire: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  if (cmd) fprintf(stderr, " (see 'moonwire %s --help')\n", cmd);
  else fputs(" (see 'moonwire --help')\n", stderr);
  return MW_EXIT_USAGE;
}

int mw_cli_fail(const char *fmt, ...) {
  va_list ap;
  fputs("moonwire: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return MW_EXIT_FAILURE;
}

int mw_cli_wants_help(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) return 0;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) return 1;
  }
  return 0;
}

int mw_cli_value_opt(const char *cmd, int argc, char **argv, int *i, const mw_cli_opt_t *opts) {
  const char *a = argv[*i];
  for (; opts->name; opts++) {
    if (strcmp(a, opts->name) != 0 && (!opts->alias || strcmp(a, opts->alias) != 0)) continue;
    if (*i + 1 >= argc) return mw_cli_usage_error(cmd, "%s needs a value", a);
    *opts->slot = argv[++*i];
    return 1;
  }
  return 0;
}

int mw_cli_positional(const char *cmd, const char *arg, const char **pos, int max, int *npos) {
  if (arg[0] == '-') return mw_cli_usage_error(cmd, "unknown option '%s'", arg);
  if (*npos >= max) return mw_cli_usage_error(cmd, "unexpected argument '%s'", arg);
  pos[(*npos)++] = arg;
  return 1;
}

static void print_help(FILE *f) {
  fprintf(f,
          "Usage: moonwire COMMAND [OPTIONS]\n"
          "       moonwire --help | --version\n\n"
          "Moonwire runs Lua device apps over mutual-TLS MQTT (AWS IoT Core or a local broker).\n\n"
          "Commands:\n");
  for (size_t i = 0; i < NCOMMANDS; i++) fprintf(f, "  %-21s %s\n", commands[i].name, commands[i].summary);
  fprintf(f,
          "\nRun 'moonwire COMMAND --help' for a command's options.\n"
          "Exit status: 0 success, 1 runtime failure, 2 usage error.\n");
}

int main(int argc, char **argv) {
  /* A peer that vanishes must show up as EPIPE from a write, not kill the process. */
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    print_help(stderr);
    return MW_EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    print_help(stdout);
    return MW_EXIT_OK;
  }
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
    printf("moonwire %s\n", MW_VERSION);
    return MW_EXIT_OK;
  }
  for (size_t i = 0; i < NCOMMANDS; i++) {
    if (strcmp(cmd, commands[i].name) != 0) continue;
    if (mw_cli_wants_help(argc - 1, argv + 1)) {
      fputs(commands[i].usage, stdout);
      return MW_EXIT_OK;
    }
    return commands[i].run(argc - 1, argv + 1);
  }
  return mw_cli_usage_error(NULL, "unknown command '%s'", cmd);
}
