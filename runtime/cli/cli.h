/* cli.h: pieces of the ramtorch-lua executable shared by main.c and repl.c. */
#ifndef RT_CLI_H
#define RT_CLI_H

#include <lua.h>

/* Run the function on top of the stack with nargs arguments under a traceback handler. On error the
 * message and traceback are printed to stderr and the status returned (the error is popped). */
int rt_cli_pcall(lua_State *L, int nargs, int nresults);
/* Interactive loop until EOF; returns the process exit status. */
int rt_cli_repl(lua_State *L);

#endif
