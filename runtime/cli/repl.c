/* repl.c: the interactive loop of ramtorch-lua. Line editing and history through libedit (Debian's
 * libedit, a BSD-licensed readline), multi-line input (a chunk that ends early keeps reading),
 * expression values printed with tostring (tensors pretty-print), errors printed with a traceback
 * without leaving the loop. Without a terminal it reads plain lines, so it can be driven by a pipe. */
#include "cli.h"

#include <lauxlib.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef RT_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

static char g_history[4096];

static char *read_line(const char *prompt, int tty) {
#ifdef RT_HAVE_LIBEDIT
    if (tty) return readline(prompt);
#endif
    (void)tty;
    static char buf[65536];
    if (tty) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
    if (!fgets(buf, sizeof buf, stdin)) return NULL;
    size_t n = strlen(buf);
    if (n && buf[n - 1] == '\n') buf[n - 1] = 0;
    return strdup(buf);
}

/* A chunk is incomplete when the parser stopped at the end of input. */
static int incomplete(lua_State *L, int status) {
    if (status != LUA_ERRSYNTAX) return 0;
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    return len >= 5 && strcmp(msg + len - 5, "<eof>") == 0;
}

/* Print every value left on the stack above base, tab-separated, via tostring. */
static void print_results(lua_State *L, int base) {
    int n = lua_gettop(L) - base;
    if (n <= 0) return;
    lua_getglobal(L, "tostring");
    for (int i = 1; i <= n; i++) {
        lua_pushvalue(L, -1);
        lua_pushvalue(L, base + i);
        if (lua_pcall(L, 1, 1, 0) != 0) {
            fprintf(stdout, "%s(tostring failed: %s)", i > 1 ? "\t" : "", lua_tostring(L, -1));
        } else {
            fprintf(stdout, "%s%s", i > 1 ? "\t" : "", lua_tostring(L, -1));
        }
        lua_pop(L, 1);
    }
    fputc('\n', stdout);
    fflush(stdout);
    lua_settop(L, base);
}

int rt_cli_repl(lua_State *L) {
    int tty = isatty(0);
#ifdef RT_HAVE_LIBEDIT
    const char *home = getenv("HOME");
    if (tty && home) {
        snprintf(g_history, sizeof g_history, "%s/.ramtorch_history", home);
        read_history(g_history);
    }
#endif
    if (tty)
        printf("ramtorch-lua %s REPL. Expressions print their value; Ctrl-D exits.\n"
               "  local torch = require(\"ramtorch\") is done for you as `torch`.\n",
               RT_VERSION_STRING);
    /* convenience global for interactive use only (scripts never get globals from us) */
    lua_getglobal(L, "require");
    lua_pushstring(L, "ramtorch");
    if (lua_pcall(L, 1, 1, 0) == 0) lua_setglobal(L, "torch");
    else {
        fprintf(stderr, "warning: require(\"ramtorch\") failed: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    char *line;
    while ((line = read_line("> ", tty)) != NULL) {
        if (!*line) {
            free(line);
            continue;
        }
        size_t cap = strlen(line) + 1;
        char *chunk = malloc(cap);
        memcpy(chunk, line, cap);
        free(line);
        int base = lua_gettop(L);
        for (;;) {
            /* try as an expression first, so `x + 1` prints its value */
            size_t n = strlen(chunk);
            char *expr = malloc(n + 8);
            memcpy(expr, "return ", 7);
            memcpy(expr + 7, chunk, n + 1);
            int status = luaL_loadbuffer(L, expr, n + 7, "=stdin");
            free(expr);
            if (status != 0) {
                lua_pop(L, 1);
                status = luaL_loadbuffer(L, chunk, n, "=stdin");
            }
            if (incomplete(L, status)) {
                lua_pop(L, 1);
                char *more = read_line(">> ", tty);
                if (!more) break;
                size_t m = strlen(more);
                chunk = realloc(chunk, n + m + 2);
                chunk[n] = '\n';
                memcpy(chunk + n + 1, more, m + 1);
                free(more);
                continue;
            }
            if (status != 0) {
                fprintf(stderr, "%s\n", lua_tostring(L, -1));
                lua_pop(L, 1);
            } else if (rt_cli_pcall(L, 0, LUA_MULTRET) == 0) {
                print_results(L, base);
            }
            break;
        }
#ifdef RT_HAVE_LIBEDIT
        if (tty) {
            add_history(chunk);
            if (g_history[0]) write_history(g_history);
        }
#endif
        free(chunk);
        lua_settop(L, base);
    }
    if (tty) putchar('\n');
    return 0;
}
