/*
 * render.c — a small ray tracer that writes a PPM image, a band of rows per
 * step, into a directory preopened with --dir.
 *
 * Shows: a step task writing a file through baton's virtual file system.
 * The file is opened when the task is created and stays open across steps
 * (its contents and the FILE buffer are part of the state); baton writes it
 * back to the host directory when the task finishes.
 *
 * Run:   mkdir -p out && baton run examples/render.wasm --dir ./out::/out
 *        baton run examples/render.wasm --dir ./out::/out -- 640 480 16
 *
 * Arguments: [width = 320] [height = 240] [rows per step = 8]; that is
 * ceil(height / rows) steps of rendering plus one that closes the file
 * (31 steps by default).
 * Output: /out/render.ppm (binary PPM, P6) and, on stdout:
 *     render: 320x240, 8 rows per step, writing /out/render.ppm
 *     render: wrote /out/render.ppm (320x240, 230415 bytes)
 * The image does not depend on the seed (no randomness is used).
 */
#include <math.h>
#include <stdio.h>

#include "baton.h"

#define OUT_PATH "/out/render.ppm"

typedef struct { double x, y, z; } vec;

static vec v(double x, double y, double z) { vec r = {x, y, z}; return r; }
static vec add(vec a, vec b) { return v(a.x + b.x, a.y + b.y, a.z + b.z); }
static vec sub(vec a, vec b) { return v(a.x - b.x, a.y - b.y, a.z - b.z); }
static vec mul(vec a, double s) { return v(a.x * s, a.y * s, a.z * s); }
static vec hadamard(vec a, vec b) { return v(a.x * b.x, a.y * b.y, a.z * b.z); }
static double dot(vec a, vec b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
static vec norm(vec a) { return mul(a, 1.0 / sqrt(dot(a, a))); }

typedef struct {
    vec centre;
    double radius;
    vec colour;
    double mirror; /* 0 = matte, 1 = perfect mirror */
} sphere;

static const sphere spheres[] = {
    {{0.0, 1.0, 0.0}, 1.0, {0.9, 0.9, 0.9}, 0.8},
    {{-2.2, 0.7, 1.0}, 0.7, {0.9, 0.2, 0.2}, 0.1},
    {{2.0, 0.6, 0.8}, 0.6, {0.2, 0.4, 0.9}, 0.2},
    {{0.9, 0.35, 2.0}, 0.35, {0.2, 0.8, 0.3}, 0.0},
    {{-0.8, 0.3, 2.3}, 0.3, {0.95, 0.8, 0.2}, 0.3},
};
#define NSPHERES (int)(sizeof spheres / sizeof spheres[0])

static const vec eye = {0.0, 1.6, 6.5};
static const vec light_pos = {-4.0, 6.0, 5.0};

/* Nearest hit along the ray: returns the distance (or 0) and the object
 * (-1 = ground plane y = 0). */
static double hit(vec o, vec d, int *what) {
    double best = 1e30;
    *what = -2;
    for (int i = 0; i < NSPHERES; i++) {
        vec oc = sub(o, spheres[i].centre);
        double b = dot(oc, d);
        double c = dot(oc, oc) - spheres[i].radius * spheres[i].radius;
        double disc = b * b - c;
        if (disc <= 0)
            continue;
        double t = -b - sqrt(disc);
        if (t > 1e-6 && t < best) {
            best = t;
            *what = i;
        }
    }
    if (d.y < -1e-9) {
        double t = -o.y / d.y;
        if (t > 1e-6 && t < best) {
            best = t;
            *what = -1;
        }
    }
    return *what == -2 ? 0.0 : best;
}

static vec trace(vec o, vec d, int depth) {
    int what;
    double t = hit(o, d, &what);
    if (t == 0.0) { /* sky: a vertical gradient */
        double k = d.y < 0 ? 0 : d.y;
        return add(mul(v(0.95, 0.95, 1.0), 1 - k), mul(v(0.35, 0.55, 0.95), k));
    }
    vec p = add(o, mul(d, t));
    vec n, base;
    double mirror;
    if (what == -1) {
        n = v(0, 1, 0);
        int check = ((int)floor(p.x) + (int)floor(p.z)) & 1;
        base = check ? v(0.85, 0.85, 0.8) : v(0.25, 0.25, 0.3);
        mirror = 0.15;
    } else {
        n = norm(sub(p, spheres[what].centre));
        base = spheres[what].colour;
        mirror = spheres[what].mirror;
    }
    vec to_light = sub(light_pos, p);
    double light_dist = sqrt(dot(to_light, to_light));
    vec l = mul(to_light, 1.0 / light_dist);
    int blocker;
    double s = hit(add(p, mul(n, 1e-4)), l, &blocker);
    int shadow = s != 0.0 && s < light_dist;
    double diffuse = shadow ? 0.0 : fmax(0.0, dot(n, l));
    vec h = norm(sub(l, d));
    double spec = shadow ? 0.0 : pow(fmax(0.0, dot(n, h)), 60.0);
    vec colour = add(mul(base, 0.12 + 0.88 * diffuse), v(spec, spec, spec));
    if (mirror > 0 && depth < 4) {
        vec r = sub(d, mul(n, 2 * dot(d, n)));
        vec rc = trace(add(p, mul(n, 1e-4)), r, depth + 1);
        colour = add(mul(colour, 1 - mirror), mul(hadamard(rc, base), mirror));
    }
    return colour;
}

static unsigned char to_byte(double c) {
    c = c <= 0 ? 0 : c >= 1 ? 1 : sqrt(c); /* gamma 2 */
    return (unsigned char)(c * 255.0 + 0.5);
}

static long width, height, rows_per_step;
static baton_cursor rows;
static unsigned char *band; /* one band of RGB rows */
static FILE *out;
static long bytes_written;

BATON_INIT {
    width = baton_arg_long(1, 320);
    height = baton_arg_long(2, 240);
    rows_per_step = baton_arg_long(3, 8);
    if (width < 1 || height < 1 || width > 8192 || height > 8192 ||
        rows_per_step < 1) {
        fprintf(stderr, "usage: render [width 1..8192] [height 1..8192] "
                        "[rows per step >= 1]\n");
        exit(2);
    }
    band = malloc((size_t)(width * 3 * rows_per_step));
    if (!band) {
        fprintf(stderr, "render: out of memory\n");
        exit(1);
    }
    out = fopen(OUT_PATH, "wb");
    if (!out) {
        fprintf(stderr, "render: cannot open %s; run with --dir HOSTDIR::/out\n",
                OUT_PATH);
        exit(1);
    }
    bytes_written = fprintf(out, "P6\n%ld %ld\n255\n", width, height);
    baton_cursor_reset(&rows, (uint64_t)height);
    printf("render: %ldx%ld, %ld rows per step, writing %s\n", width, height,
           rows_per_step, OUT_PATH);
    fflush(stdout);
}

BATON_STEP {
    uint64_t lo, hi;
    if (baton_take(&rows, (uint64_t)rows_per_step, &lo, &hi)) {
        double aspect = (double)width / (double)height;
        unsigned char *px = band;
        for (uint64_t y = lo; y < hi; y++) {
            for (long x = 0; x < width; x++) {
                vec c = v(0, 0, 0);
                for (int sy = 0; sy < 2; sy++)     /* 2x2 supersampling */
                    for (int sx = 0; sx < 2; sx++) {
                        double u = ((x + 0.25 + 0.5 * sx) / width * 2 - 1) * aspect;
                        double w = 1 - (y + 0.25 + 0.5 * sy) / height * 2;
                        vec d = norm(v(u * 0.55, w * 0.55 - 0.12, -1));
                        c = add(c, trace(eye, d, 0));
                    }
                c = mul(c, 0.25);
                *px++ = to_byte(c.x);
                *px++ = to_byte(c.y);
                *px++ = to_byte(c.z);
            }
        }
        size_t n = (size_t)(px - band);
        if (fwrite(band, 1, n, out) != n) {
            fprintf(stderr, "render: write to %s failed\n", OUT_PATH);
            BATON_FINISH(1);
        }
        bytes_written += (long)n;
        return BATON_CONTINUE;
    }
    if (fclose(out) != 0) {
        fprintf(stderr, "render: closing %s failed\n", OUT_PATH);
        BATON_FINISH(1);
    }
    printf("render: wrote %s (%ldx%ld, %ld bytes)\n", OUT_PATH, width, height,
           bytes_written);
    BATON_FINISH(0);
}
