/*
** Command-line plumbing shared by the subcommands: exit codes, usage errors and the
** table of commands main() dispatches on.
*/
#ifndef MW_CLI_H
#define MW_CLI_H

enum { MW_EXIT_OK = 0, MW_EXIT_FAILURE = 1, MW_EXIT_USAGE = 2 };

typedef struct {
  const char *name;
  int (*run)(int argc, char **argv); /* argv[0] is the command name */
  const char *summary;
  const char *usage; /* full help text of the command */
} mw_command_t;

/* Prints "moonwire: <msg>" and a hint to stderr, returns MW_EXIT_USAGE. */
int mw_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "moonwire: <msg>" to stderr, returns MW_EXIT_FAILURE. */
int mw_cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* True when argv holds -h or --help. */
int mw_cli_wants_help(int argc, char **argv);

/* An option that takes a value: NAME VALUE (or ALIAS VALUE) stores VALUE in *slot. */
typedef struct {
  const char *name, *alias;
  const char **slot;
} mw_cli_opt_t;

/*
** The argument parsers of the commands are a chain of these, each returning 1 when it
** took argv[*i], 0 when it is not its kind, or MW_EXIT_USAGE after saying why.
**
** mw_cli_value_opt: one of opts (up to the first entry without a name) with its value;
** "NAME needs a value" when it is the last argument.
** mw_cli_positional: any other word as positional number *npos (fewer than max);
** "unknown option" for a leftover -x, "unexpected argument" past max.
*/
int mw_cli_value_opt(const char *cmd, int argc, char **argv, int *i, const mw_cli_opt_t *opts);
int mw_cli_positional(const char *cmd, const char *arg, const char **pos, int max, int *npos);

int mw_cmd_run(int argc, char **argv);
int mw_cmd_script(int argc, char **argv);
int mw_cmd_shadow_service(int argc, char **argv);
int mw_cmd_se(int argc, char **argv);
int mw_cmd_pkcs11(int argc, char **argv);
int mw_cmd_repl(int argc, char **argv);
int mw_cmd_attach(int argc, char **argv);
int mw_cmd_provisioning_service(int argc, char **argv);
int mw_cmd_provision(int argc, char **argv);
int mw_cmd_outbox(int argc, char **argv);

extern const char mw_usage_run[];
extern const char mw_usage_script[];
extern const char mw_usage_shadow_service[];
extern const char mw_usage_se[];
extern const char mw_usage_pkcs11[];
extern const char mw_usage_repl[];
extern const char mw_usage_attach[];
extern const char mw_usage_provisioning_service[];
extern const char mw_usage_provision[];
extern const char mw_usage_outbox[];

#endif
