/* main.c: the ramtorch-lua executable. LuaJIT with the ramtorch modules on package.path (from the
 * build tree, or relative to the installed binary), running a script, a -e chunk, or the REPL. */
#include "cli.h"

#include <lauxlib.h>
#include <lualib.h>
#include <luajit.h>

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const k_usage =
    "usage: ramtorch-lua [options] [script.lua [args...]]\n"
    "\n"
    "Runs a Lua script with the ramtorch runtime (require \"ramtorch\"). With no script, starts\n"
    "an interactive REPL (reading lines from standard input when it is not a terminal).\n"
    "\n"
    "options:\n"
    "  -e CODE        run CODE (may be repeated; runs before the script)\n"
    "  -i             enter the REPL after running the script or -e code\n"
    "  --nproc N      run N worker processes of the script (not available yet in this version)\n"
    "  -v, --version  print the version and exit\n"
    "  -h, --help     print this help and exit\n"
    "  -              read the script from standard input\n"
    "\n"
    "environment:\n"
    "  RAMTORCH_LIB   path of libramtorch.so to load instead of the one found next to the binary\n";

static int file_exists(const char *p) {
    return access(p, R_OK) == 0;
}

/* Set package.path so `require "ramtorch"` finds the modules, and record where libramtorch is in
 * package.loaded["ramtorch.paths"] for lua/ramtorch/ffi.lua. Installed layout wins over build tree
 * when both could apply (the binary sits in <prefix>/bin). */
static void setup_paths(lua_State *L) {
    char exe[PATH_MAX], prefix[PATH_MAX], buf[PATH_MAX * 4];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char build_lua[PATH_MAX * 2];
    snprintf(build_lua, sizeof build_lua, "%s/?.lua;%s/?/init.lua;%s/?.lua", RT_SOURCE_LUA_DIR,
             RT_SOURCE_LUA_DIR, RT_BUILD_LUA_DIR);
    const char *lua_dirs = build_lua;
    char libdir[PATH_MAX * 2];
    snprintf(libdir, sizeof libdir, "%s", RT_BUILD_LIB_DIR);
    char installed_lua[PATH_MAX * 3];
    if (n > 0) {
        exe[n] = 0;
        snprintf(prefix, sizeof prefix, "%s", exe);
        char *slash = strrchr(prefix, '/');
        if (slash) *slash = 0; /* <prefix>/bin */
        slash = strrchr(prefix, '/');
        if (slash) *slash = 0; /* <prefix> */
        char probe[PATH_MAX * 2];
        snprintf(probe, sizeof probe, "%s/%s/ramtorch/init.lua", prefix, RT_INSTALL_LUA_REL);
        if (file_exists(probe)) {
            snprintf(installed_lua, sizeof installed_lua, "%s/%s/?.lua;%s/%s/?/init.lua", prefix,
                     RT_INSTALL_LUA_REL, prefix, RT_INSTALL_LUA_REL);
            lua_dirs = installed_lua;
            snprintf(libdir, sizeof libdir, "%s/%s", prefix, RT_INSTALL_LIB_REL);
        }
    }
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    snprintf(buf, sizeof buf, "%s;%s", lua_dirs, lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_pushstring(L, buf);
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "loaded");
    lua_newtable(L);
    const char *env = getenv("RAMTORCH_LIB");
    if (env && *env) {
        lua_pushstring(L, env);
    } else {
        snprintf(buf, sizeof buf, "%s/libramtorch.so", libdir);
        lua_pushstring(L, buf);
    }
    lua_setfield(L, -2, "lib");
    lua_pushstring(L, RT_VERSION_STRING);
    lua_setfield(L, -2, "version");
    lua_setfield(L, -2, "ramtorch.paths");
    lua_pop(L, 2);
}

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg && lua_isnoneornil(L, 1)) return 1; /* error(): a silent failure, as in luajit */
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_pushstring(L, msg);
    lua_pushinteger(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

int rt_cli_pcall(lua_State *L, int nargs, int nresults) {
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    if (status != 0) {
        /* a nil error (busted exits with error() under Lua 5.1) fails without a message */
        if (!lua_isnil(L, -1)) {
            fprintf(stderr, "ramtorch-lua: %s\n", lua_tostring(L, -1));
            fflush(stderr);
        }
        lua_pop(L, 1);
    }
    return status;
}

/* ---- SIGINT / SIGTERM while a script or -e code runs ----------------------------------------
 * The first signal raises a Lua error ("interrupted by SIGINT") at the next hook point, so the
 * script's pcall / error handling runs (a training job can say where its last checkpoint is) and
 * the message and traceback are printed; the process then ends by that signal (status 128 + N). The
 * default action is restored at once, so a second signal ends the process right away, and an alarm
 * does the same after RT_CLI_SIGNAL_GRACE_S seconds if no hook point is reached (a JIT-compiled
 * loop never checks): an interruption never hangs. */
#define RT_CLI_SIGNAL_GRACE_S 2

static volatile sig_atomic_t g_signal; /* the signal that interrupted the script, 0 if none */
static lua_State *g_script_L;
static pthread_t g_script_thread;

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    alarm(0); /* reached a hook point: the script handles the error now */
    luaL_error(L, "interrupted by %s", g_signal == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_alarm(int sig) {
    (void)sig;
    int s = g_signal ? g_signal : SIGINT;
    signal(s, SIG_DFL);
    raise(s);
}

static void on_interrupt(int sig) {
    /* the kernel may deliver the signal to an OpenBLAS/OpenMP thread; the hook belongs to main */
    if (!pthread_equal(pthread_self(), g_script_thread)) {
        pthread_kill(g_script_thread, sig);
        return;
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    g_signal = sig;
    signal(SIGALRM, on_alarm);
    alarm(RT_CLI_SIGNAL_GRACE_S);
    lua_sethook(g_script_L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void catch_interrupts(lua_State *L) {
    g_script_L = L;
    g_script_thread = pthread_self();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    /* a signal ignored at startup (nohup, a background job) stays ignored */
    struct sigaction old;
    if (sigaction(SIGINT, NULL, &old) == 0 && old.sa_handler != SIG_IGN)
        sigaction(SIGINT, &sa, NULL);
    if (sigaction(SIGTERM, NULL, &old) == 0 && old.sa_handler != SIG_IGN)
        sigaction(SIGTERM, &sa, NULL);
}

static void release_interrupts(lua_State *L) {
    struct sigaction old;
    if (sigaction(SIGINT, NULL, &old) == 0 && old.sa_handler == on_interrupt)
        signal(SIGINT, SIG_DFL);
    if (sigaction(SIGTERM, NULL, &old) == 0 && old.sa_handler == on_interrupt)
        signal(SIGTERM, SIG_DFL);
    lua_sethook(L, NULL, 0, 0);
}

/* The standard `arg` table: arg[0] = script, arg[1..] = its arguments, arg[-1] = interpreter.
 * Without a script all words sit at negative indices, as in luajit (arg[0] nil, #arg 0). */
static void set_arg_table(lua_State *L, char **argv, int argc, int script_index) {
    if (script_index == 0) script_index = argc;
    lua_createtable(L, argc, 2);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script_index);
    }
    lua_setglobal(L, "arg");
}

int main(int argc, char **argv) {
    int script = 0, interactive = 0;
    const char *chunks[64];
    int nchunks = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(k_usage, stdout);
            return 0;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--version")) {
            printf("ramtorch-lua %s (%s)\n", RT_VERSION_STRING, LUAJIT_VERSION);
            return 0;
        } else if (!strncmp(a, "-e", 2) && a[2]) { /* -eCODE, as lua accepts */
            if (nchunks == 64) {
                fprintf(stderr, "ramtorch-lua: too many -e options (at most 64)\n");
                return 2;
            }
            chunks[nchunks++] = a + 2;
        } else if (!strcmp(a, "-e")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ramtorch-lua: -e needs an argument (see --help)\n");
                return 2;
            }
            if (nchunks == 64) {
                fprintf(stderr, "ramtorch-lua: too many -e options (at most 64)\n");
                return 2;
            }
            chunks[nchunks++] = argv[++i];
        } else if (!strcmp(a, "-i")) {
            interactive = 1;
        } else if (!strcmp(a, "--nproc")) {
            fprintf(stderr, "ramtorch-lua: --nproc (multi-process launch) is not available in this "
                            "version yet; run the script without it\n");
            return 2;
        } else if (!strcmp(a, "--")) {
            if (i + 1 < argc) script = i + 1;
            break;
        } else if (a[0] == '-' && a[1] != 0) {
            fprintf(stderr, "ramtorch-lua: unknown option '%s' (see --help)\n", a);
            return 2;
        } else {
            script = i;
            break;
        }
    }

    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "ramtorch-lua: cannot create the Lua state (out of memory)\n");
        return 1;
    }
    /* A write past the file size limit (ulimit -f) fails with EFBIG instead of killing the process,
     * as in Python: torch.save then reports it and removes its temporary file. */
    signal(SIGXFSZ, SIG_IGN);
    luaL_openlibs(L);
    setup_paths(L);
    set_arg_table(L, argv, argc, script);

    int status = 0;
    catch_interrupts(L);
    for (int i = 0; i < nchunks && status == 0; i++) {
        if (luaL_loadbuffer(L, chunks[i], strlen(chunks[i]), "=(command line)") != 0) {
            fprintf(stderr, "ramtorch-lua: %s\n", lua_tostring(L, -1));
            lua_pop(L, 1);
            status = 1;
        } else {
            status = rt_cli_pcall(L, 0, 0);
        }
    }
    if (status == 0 && script) {
        const char *path = argv[script];
        if (luaL_loadfile(L, strcmp(path, "-") ? path : NULL) != 0) {
            fprintf(stderr, "ramtorch-lua: %s\n", lua_tostring(L, -1));
            lua_pop(L, 1);
            status = 1;
        } else {
            int nargs = argc - script - 1;
            for (int i = script + 1; i < argc; i++)
                lua_pushstring(L, argv[i]);
            status = rt_cli_pcall(L, nargs, 0);
        }
    }
    release_interrupts(L);
    if (g_signal) {
        /* end by the signal, so the caller sees the interruption (status 128 + N) */
        alarm(0);
        lua_close(L);
        fflush(NULL);
        signal(g_signal, SIG_DFL);
        raise(g_signal);
        return 128 + g_signal;
    }
    if (status == 0 && (interactive || (!script && nchunks == 0))) status = rt_cli_repl(L);
    lua_close(L);
    return status ? 1 : 0;
}
