/* repl.c: the interactive loop of ramtorch-lua. Line editing and history through libedit's native
 * API (Debian's libedit, a BSD-licensed line editor); multi-line input (a chunk that ends early
 * keeps reading with a ">> " prompt); expression values printed with tostring (tensors
 * pretty-print); `=expr` as in lua5.1; errors printed with a traceback without leaving the loop.
 * Ctrl-C at the prompt drops the line being typed; Ctrl-C while a chunk runs raises "interrupted!"
 * in it (a second Ctrl-C kills the process, for JIT-compiled loops that never reach a hook).
 * Without a terminal it reads plain lines without prompts, so it can be driven through a pipe. */
#include "cli.h"

#include <lauxlib.h>

#include <errno.h>
#include <locale.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef RT_HAVE_LIBEDIT
#include <histedit.h>
#include <wchar.h>
#endif

#define RT_HISTORY_SIZE 1000

/* ---- SIGINT -------------------------------------------------------------------------------- */

static volatile sig_atomic_t g_interrupted; /* Ctrl-C seen while reading a line */
static lua_State *g_L;                      /* the state a running chunk belongs to */
static pthread_t g_main_thread;             /* the thread that reads input and runs Lua */

/* SIGINT is sent to the process, and the kernel may hand it to any thread that does not block it:
 * OpenBLAS and OpenMP worker threads exist once libramtorch is loaded. The handlers act on the main
 * thread only (its read() must see EINTR; the Lua hook belongs to it), so a handler running
 * elsewhere passes the signal on to the main thread. */
static int forwarded(int sig) {
    if (pthread_equal(pthread_self(), g_main_thread)) return 0;
    pthread_kill(g_main_thread, sig);
    return 1;
}

static void on_sigint_read(int sig) {
    if (forwarded(sig)) return;
    g_interrupted = 1;
}

/* Raised from a hook (not from the signal handler) so the error unwinds Lua normally. */
static void stop_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

/* While a chunk runs: ask Lua to stop at the next hook point, as lua.c/luajit.c do. The default
 * action is restored first, so a second Ctrl-C ends a loop that never reaches a hook. */
static void on_sigint_exec(int sig) {
    if (forwarded(sig)) return;
    signal(sig, SIG_DFL);
    lua_sethook(g_L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void set_sigint(void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a blocked read() must return EINTR */
    sigaction(SIGINT, &sa, NULL);
}

/* ---- line input ---------------------------------------------------------------------------- */

#ifdef RT_HAVE_LIBEDIT
static EditLine *g_el;
static History *g_hist;
static const char *g_prompt = "> ";
static char g_history_path[4096];

static char *prompt_fn(EditLine *el) {
    (void)el;
    return (char *)g_prompt;
}

/* libedit's own reader retries a read() interrupted by a signal, so Ctrl-C would not end the line.
 * This one gives up when the SIGINT flag is set (el_gets then returns NULL) and otherwise decodes
 * the bytes as the locale's multibyte characters, as the built-in reader does. */
static int getc_fn(EditLine *el, wchar_t *wc) {
    (void)el;
    mbstate_t st;
    memset(&st, 0, sizeof st);
    for (;;) {
        if (g_interrupted) return -1;
        char b;
        ssize_t n = read(STDIN_FILENO, &b, 1);
        if (n < 0) {
            if (errno == EINTR) continue; /* the flag check above decides */
            return -1;
        }
        if (n == 0) return 0;
        size_t r = mbrtowc(wc, &b, 1, &st);
        if (r == (size_t)-2) continue; /* more bytes of this character to come */
        if (r == (size_t)-1) {         /* not valid in the locale: pass the byte through */
            *wc = (wchar_t)(unsigned char)b;
            memset(&st, 0, sizeof st);
        }
        return 1;
    }
}

static void editor_open(void) {
    setlocale(LC_CTYPE, ""); /* multibyte input needs the user's locale */
    g_el = el_init("ramtorch-lua", stdin, stdout, stderr);
    g_hist = history_init();
    if (!g_el || !g_hist) return;
    HistEvent ev;
    history(g_hist, &ev, H_SETSIZE, RT_HISTORY_SIZE);
    history(g_hist, &ev, H_SETUNIQUE, 1);
    el_set(g_el, EL_EDITOR, "emacs");
    el_set(g_el, EL_SIGNAL, 1); /* window resize, suspend/continue restore the terminal */
    el_set(g_el, EL_PROMPT, prompt_fn);
    el_set(g_el, EL_HIST, history, g_hist);
    el_set(g_el, EL_GETCFN, getc_fn);
    el_source(g_el, NULL); /* the user's ~/.editrc, if any */
    /* no $HOME, no history file: history stays in memory for this session */
    const char *home = getenv("HOME");
    if (home && *home) {
        snprintf(g_history_path, sizeof g_history_path, "%s/.ramtorch_history", home);
        history(g_hist, &ev, H_LOAD, g_history_path);
    }
}

static void editor_close(void) {
    if (g_el) el_end(g_el);
    if (g_hist) history_end(g_hist);
    g_el = NULL;
    g_hist = NULL;
}

static void history_add(const char *chunk) {
    if (!g_hist) return;
    HistEvent ev;
    history(g_hist, &ev, H_ENTER, chunk);
    /* saved after every entry so a crash or os.exit() keeps the session's history */
    if (g_history_path[0]) history(g_hist, &ev, H_SAVE, g_history_path);
}
#endif

enum { LINE_OK, LINE_EOF, LINE_INTERRUPTED };

/* Read one line without its newline into *out (malloc'd). */
static int read_line(const char *prompt, int tty, char **out) {
    *out = NULL;
#ifdef RT_HAVE_LIBEDIT
    if (tty && g_el) {
        g_prompt = prompt;
        g_interrupted = 0;
        set_sigint(on_sigint_read);
        int count = 0;
        const char *s = el_gets(g_el, &count);
        signal(SIGINT, SIG_DFL);
        if (g_interrupted) {
            g_interrupted = 0;
            fputs("^C\n", stdout);
            fflush(stdout);
            return LINE_INTERRUPTED;
        }
        if (!s || count <= 0) return LINE_EOF;
        size_t n = strlen(s);
        if (n && s[n - 1] == '\n') n--;
        *out = strndup(s, n);
        return *out ? LINE_OK : LINE_EOF;
    }
#endif
    if (tty) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
    size_t cap = 0;
    ssize_t n = getline(out, &cap, stdin);
    if (n < 0) {
        free(*out);
        *out = NULL;
        return LINE_EOF;
    }
    if (n && (*out)[n - 1] == '\n') (*out)[n - 1] = 0;
    return LINE_OK;
}

/* ---- evaluation ---------------------------------------------------------------------------- */

/* A chunk is incomplete when the parser stopped at the end of input (lua.c's test). */
static int incomplete(lua_State *L, int status) {
    if (status != LUA_ERRSYNTAX) return 0;
    static const char eof_mark[] = "'<eof>'";
    size_t len, k = sizeof eof_mark - 1;
    const char *msg = lua_tolstring(L, -1, &len);
    return msg && len >= k && strcmp(msg + len - k, eof_mark) == 0;
}

/* Identity: returns its arguments. Expressions are compiled as `return values(EXPR)` so a call in
 * EXPR is not a tail call and an error raised in it keeps its "stdin:1:" position. */
static int values(lua_State *L) {
    return lua_gettop(L);
}

/* Load `prefix` + `chunk` as chunk "=stdin"; pushes the function or the error message. */
static int load_with(lua_State *L, const char *prefix, const char *chunk, const char *suffix) {
    size_t p = strlen(prefix), n = strlen(chunk), s = strlen(suffix);
    char *src = malloc(p + n + s + 1);
    if (!src) return lua_pushliteral(L, "not enough memory"), LUA_ERRMEM;
    memcpy(src, prefix, p);
    memcpy(src + p, chunk, n);
    memcpy(src + p + n, suffix, s + 1);
    int status = luaL_loadbuffer(L, src, p + n + s, "=stdin");
    free(src);
    return status;
}

/* Compile `chunk` as an expression list (returning its values) or failing that as statements
 * (`=expr` only as an expression). Pushes the function and its one argument, or an error message;
 * returns the load status. The chunk is incomplete (see incomplete()) when either reading of it
 * ran into the end of input, so `x = 1 +` and `"a" ..` both continue on the next line. */
static int load_chunk(lua_State *L, const char *chunk, int expr_only) {
    /* newline before ')': a trailing -- comment must not swallow it */
    int status = load_with(L, "local __ramtorch_repl_values = ...; return __ramtorch_repl_values(",
                           chunk, "\n)");
    if (status == 0) {
        lua_pushcfunction(L, values);
        return 0;
    }
    lua_pop(L, 1);
    status = load_with(L, expr_only ? "return " : "", chunk, "");
    if (status == 0) {
        lua_pushnil(L); /* a statement chunk takes one (ignored) argument too */
        return 0;
    }
    if (expr_only || incomplete(L, status)) return status;
    int as_expr = load_with(L, "return ", chunk, "");
    if (incomplete(L, as_expr)) {
        lua_remove(L, -2); /* keep the "<eof>" message */
        return as_expr;
    }
    lua_pop(L, 1); /* report the statement reading's error */
    return status;
}

/* Print the values left on the stack above base, tab-separated, through ramtorch.inspect's format
 * (tostring for tensors and anything with __tostring; plain tables by content, so `x.shape` shows
 * `{2, 3}`), falling back to tostring when that module cannot be loaded. Nothing is printed when
 * there are none or all are nil (a call like print(x) or f() that returns nothing). */
static void print_results(lua_State *L, int base) {
    int n = lua_gettop(L) - base, any = 0;
    for (int i = 1; i <= n; i++)
        any |= !lua_isnil(L, base + i);
    if (!any) {
        lua_settop(L, base);
        return;
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, "ramtorch.inspect");
    if (lua_pcall(L, 1, 1, 0) == 0 && lua_istable(L, -1)) {
        lua_getfield(L, -1, "format");
        lua_remove(L, -2);
    } else {
        lua_pop(L, 1);
    }
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        lua_getglobal(L, "tostring");
    }
    for (int i = 1; i <= n; i++) {
        lua_pushvalue(L, -1);
        lua_pushvalue(L, base + i);
        const char *sep = i > 1 ? "\t" : "";
        if (lua_pcall(L, 1, 1, 0) != 0 || !lua_isstring(L, -1)) {
            fprintf(stdout, "%s(tostring failed: %s)", sep, lua_tostring(L, -1));
        } else {
            size_t len;
            const char *s = lua_tolstring(L, -1, &len);
            fputs(sep, stdout);
            fwrite(s, 1, len, stdout);
        }
        lua_pop(L, 1);
    }
    fputc('\n', stdout);
    fflush(stdout);
    lua_settop(L, base);
}

/* Run the loaded function + argument on the stack with Ctrl-C turned into a Lua error. */
static void run_chunk(lua_State *L, int base) {
    g_L = L;
    set_sigint(on_sigint_exec);
    int status = rt_cli_pcall(L, 1, LUA_MULTRET);
    signal(SIGINT, SIG_DFL);
    lua_sethook(L, NULL, 0, 0);
    fflush(stdout);
    if (status == 0) print_results(L, base);
}

/* ---- the loop ------------------------------------------------------------------------------ */

int rt_cli_repl(lua_State *L) {
    int tty = isatty(STDIN_FILENO);
    g_main_thread = pthread_self();
#ifdef RT_HAVE_LIBEDIT
    if (tty) editor_open();
#endif
    if (tty)
        printf("ramtorch-lua %s REPL. Expressions print their value; Ctrl-D exits.\n"
               "  `torch` is require(\"ramtorch\") (bound in the REPL only).\n",
               RT_VERSION_STRING);
    /* convenience global for interactive use only (scripts never get globals from us) */
    lua_getglobal(L, "require");
    lua_pushstring(L, "ramtorch");
    if (rt_cli_pcall(L, 1, 1) == 0) lua_setglobal(L, "torch");

    for (;;) {
        char *line;
        int r = read_line("> ", tty, &line);
        if (r == LINE_EOF) break;
        if (r == LINE_INTERRUPTED) continue;
        if (!*line) {
            free(line);
            continue;
        }
        char *chunk = line;
        int base = lua_gettop(L), dropped = 0;
        for (;;) {
            int expr_only = chunk[0] == '=';
            int status = load_chunk(L, expr_only ? chunk + 1 : chunk, expr_only);
            if (incomplete(L, status)) {
                lua_pop(L, 1);
                char *more;
                r = read_line(">> ", tty, &more);
                if (r != LINE_OK) { /* Ctrl-C or EOF drops the unfinished chunk */
                    dropped = 1;
                    break;
                }
                size_t n = strlen(chunk), m = strlen(more);
                char *grown = realloc(chunk, n + m + 2);
                if (!grown) {
                    free(more);
                    dropped = 1;
                    break;
                }
                chunk = grown;
                chunk[n] = '\n';
                memcpy(chunk + n + 1, more, m + 1);
                free(more);
                continue;
            }
            if (status != 0) {
                fprintf(stderr, "%s\n", lua_tostring(L, -1));
                fflush(stderr);
            } else {
                run_chunk(L, base);
            }
            break;
        }
#ifdef RT_HAVE_LIBEDIT
        if (tty && !dropped) history_add(chunk);
#endif
        free(chunk);
        lua_settop(L, base);
        if (r == LINE_EOF) break;
    }
#ifdef RT_HAVE_LIBEDIT
    editor_close();
#endif
    if (tty) putchar('\n');
    return 0;
}
