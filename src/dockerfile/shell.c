/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shell-word expansion with BuildKit's semantics (frontend/dockerfile/shell).
 *
 * The structure follows BuildKit's lexer so that its quirks carry over: the
 * input is read rune by rune as Go's text/scanner does (a leading U+FEFF is
 * skipped, a byte that is not UTF-8 reads as U+FFFD), names use Go's
 * unicode.IsLetter/IsDigit, and word splitting uses unicode.IsSpace. The
 * #, %, / patterns are matched as the Go regular expressions BuildKit builds
 * from them, with leftmost-first priority (a Pike machine, so time is
 * pattern length times value length and memory is pattern length).
 */

#include <errno.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/goquote.h"
#include "dockerfile/shell.h"

#define EOF_RUNE   (-1)
#define RUNE_ERROR 0xFFFD

struct range {
        uint32_t lo, hi;
};

/* Unicode 15.0 (the version of Go's unicode package BuildKit is built
 * with): general category L (unicode.IsLetter) and Nd (unicode.IsDigit),
 * generated from ICU's u_charType. */
/* clang-format off */
static const struct range letters[] = {
        { 0x0041, 0x005A },
        { 0x0061, 0x007A },
        { 0x00AA, 0x00AA },
        { 0x00B5, 0x00B5 },
        { 0x00BA, 0x00BA },
        { 0x00C0, 0x00D6 },
        { 0x00D8, 0x00F6 },
        { 0x00F8, 0x02C1 },
        { 0x02C6, 0x02D1 },
        { 0x02E0, 0x02E4 },
        { 0x02EC, 0x02EC },
        { 0x02EE, 0x02EE },
        { 0x0370, 0x0374 },
        { 0x0376, 0x0377 },
        { 0x037A, 0x037D },
        { 0x037F, 0x037F },
        { 0x0386, 0x0386 },
        { 0x0388, 0x038A },
        { 0x038C, 0x038C },
        { 0x038E, 0x03A1 },
        { 0x03A3, 0x03F5 },
        { 0x03F7, 0x0481 },
        { 0x048A, 0x052F },
        { 0x0531, 0x0556 },
        { 0x0559, 0x0559 },
        { 0x0560, 0x0588 },
        { 0x05D0, 0x05EA },
        { 0x05EF, 0x05F2 },
        { 0x0620, 0x064A },
        { 0x066E, 0x066F },
        { 0x0671, 0x06D3 },
        { 0x06D5, 0x06D5 },
        { 0x06E5, 0x06E6 },
        { 0x06EE, 0x06EF },
        { 0x06FA, 0x06FC },
        { 0x06FF, 0x06FF },
        { 0x0710, 0x0710 },
        { 0x0712, 0x072F },
        { 0x074D, 0x07A5 },
        { 0x07B1, 0x07B1 },
        { 0x07CA, 0x07EA },
        { 0x07F4, 0x07F5 },
        { 0x07FA, 0x07FA },
        { 0x0800, 0x0815 },
        { 0x081A, 0x081A },
        { 0x0824, 0x0824 },
        { 0x0828, 0x0828 },
        { 0x0840, 0x0858 },
        { 0x0860, 0x086A },
        { 0x0870, 0x0887 },
        { 0x0889, 0x088E },
        { 0x08A0, 0x08C9 },
        { 0x0904, 0x0939 },
        { 0x093D, 0x093D },
        { 0x0950, 0x0950 },
        { 0x0958, 0x0961 },
        { 0x0971, 0x0980 },
        { 0x0985, 0x098C },
        { 0x098F, 0x0990 },
        { 0x0993, 0x09A8 },
        { 0x09AA, 0x09B0 },
        { 0x09B2, 0x09B2 },
        { 0x09B6, 0x09B9 },
        { 0x09BD, 0x09BD },
        { 0x09CE, 0x09CE },
        { 0x09DC, 0x09DD },
        { 0x09DF, 0x09E1 },
        { 0x09F0, 0x09F1 },
        { 0x09FC, 0x09FC },
        { 0x0A05, 0x0A0A },
        { 0x0A0F, 0x0A10 },
        { 0x0A13, 0x0A28 },
        { 0x0A2A, 0x0A30 },
        { 0x0A32, 0x0A33 },
        { 0x0A35, 0x0A36 },
        { 0x0A38, 0x0A39 },
        { 0x0A59, 0x0A5C },
        { 0x0A5E, 0x0A5E },
        { 0x0A72, 0x0A74 },
        { 0x0A85, 0x0A8D },
        { 0x0A8F, 0x0A91 },
        { 0x0A93, 0x0AA8 },
        { 0x0AAA, 0x0AB0 },
        { 0x0AB2, 0x0AB3 },
        { 0x0AB5, 0x0AB9 },
        { 0x0ABD, 0x0ABD },
        { 0x0AD0, 0x0AD0 },
        { 0x0AE0, 0x0AE1 },
        { 0x0AF9, 0x0AF9 },
        { 0x0B05, 0x0B0C },
        { 0x0B0F, 0x0B10 },
        { 0x0B13, 0x0B28 },
        { 0x0B2A, 0x0B30 },
        { 0x0B32, 0x0B33 },
        { 0x0B35, 0x0B39 },
        { 0x0B3D, 0x0B3D },
        { 0x0B5C, 0x0B5D },
        { 0x0B5F, 0x0B61 },
        { 0x0B71, 0x0B71 },
        { 0x0B83, 0x0B83 },
        { 0x0B85, 0x0B8A },
        { 0x0B8E, 0x0B90 },
        { 0x0B92, 0x0B95 },
        { 0x0B99, 0x0B9A },
        { 0x0B9C, 0x0B9C },
        { 0x0B9E, 0x0B9F },
        { 0x0BA3, 0x0BA4 },
        { 0x0BA8, 0x0BAA },
        { 0x0BAE, 0x0BB9 },
        { 0x0BD0, 0x0BD0 },
        { 0x0C05, 0x0C0C },
        { 0x0C0E, 0x0C10 },
        { 0x0C12, 0x0C28 },
        { 0x0C2A, 0x0C39 },
        { 0x0C3D, 0x0C3D },
        { 0x0C58, 0x0C5A },
        { 0x0C5D, 0x0C5D },
        { 0x0C60, 0x0C61 },
        { 0x0C80, 0x0C80 },
        { 0x0C85, 0x0C8C },
        { 0x0C8E, 0x0C90 },
        { 0x0C92, 0x0CA8 },
        { 0x0CAA, 0x0CB3 },
        { 0x0CB5, 0x0CB9 },
        { 0x0CBD, 0x0CBD },
        { 0x0CDD, 0x0CDE },
        { 0x0CE0, 0x0CE1 },
        { 0x0CF1, 0x0CF2 },
        { 0x0D04, 0x0D0C },
        { 0x0D0E, 0x0D10 },
        { 0x0D12, 0x0D3A },
        { 0x0D3D, 0x0D3D },
        { 0x0D4E, 0x0D4E },
        { 0x0D54, 0x0D56 },
        { 0x0D5F, 0x0D61 },
        { 0x0D7A, 0x0D7F },
        { 0x0D85, 0x0D96 },
        { 0x0D9A, 0x0DB1 },
        { 0x0DB3, 0x0DBB },
        { 0x0DBD, 0x0DBD },
        { 0x0DC0, 0x0DC6 },
        { 0x0E01, 0x0E30 },
        { 0x0E32, 0x0E33 },
        { 0x0E40, 0x0E46 },
        { 0x0E81, 0x0E82 },
        { 0x0E84, 0x0E84 },
        { 0x0E86, 0x0E8A },
        { 0x0E8C, 0x0EA3 },
        { 0x0EA5, 0x0EA5 },
        { 0x0EA7, 0x0EB0 },
        { 0x0EB2, 0x0EB3 },
        { 0x0EBD, 0x0EBD },
        { 0x0EC0, 0x0EC4 },
        { 0x0EC6, 0x0EC6 },
        { 0x0EDC, 0x0EDF },
        { 0x0F00, 0x0F00 },
        { 0x0F40, 0x0F47 },
        { 0x0F49, 0x0F6C },
        { 0x0F88, 0x0F8C },
        { 0x1000, 0x102A },
        { 0x103F, 0x103F },
        { 0x1050, 0x1055 },
        { 0x105A, 0x105D },
        { 0x1061, 0x1061 },
        { 0x1065, 0x1066 },
        { 0x106E, 0x1070 },
        { 0x1075, 0x1081 },
        { 0x108E, 0x108E },
        { 0x10A0, 0x10C5 },
        { 0x10C7, 0x10C7 },
        { 0x10CD, 0x10CD },
        { 0x10D0, 0x10FA },
        { 0x10FC, 0x1248 },
        { 0x124A, 0x124D },
        { 0x1250, 0x1256 },
        { 0x1258, 0x1258 },
        { 0x125A, 0x125D },
        { 0x1260, 0x1288 },
        { 0x128A, 0x128D },
        { 0x1290, 0x12B0 },
        { 0x12B2, 0x12B5 },
        { 0x12B8, 0x12BE },
        { 0x12C0, 0x12C0 },
        { 0x12C2, 0x12C5 },
        { 0x12C8, 0x12D6 },
        { 0x12D8, 0x1310 },
        { 0x1312, 0x1315 },
        { 0x1318, 0x135A },
        { 0x1380, 0x138F },
        { 0x13A0, 0x13F5 },
        { 0x13F8, 0x13FD },
        { 0x1401, 0x166C },
        { 0x166F, 0x167F },
        { 0x1681, 0x169A },
        { 0x16A0, 0x16EA },
        { 0x16F1, 0x16F8 },
        { 0x1700, 0x1711 },
        { 0x171F, 0x1731 },
        { 0x1740, 0x1751 },
        { 0x1760, 0x176C },
        { 0x176E, 0x1770 },
        { 0x1780, 0x17B3 },
        { 0x17D7, 0x17D7 },
        { 0x17DC, 0x17DC },
        { 0x1820, 0x1878 },
        { 0x1880, 0x1884 },
        { 0x1887, 0x18A8 },
        { 0x18AA, 0x18AA },
        { 0x18B0, 0x18F5 },
        { 0x1900, 0x191E },
        { 0x1950, 0x196D },
        { 0x1970, 0x1974 },
        { 0x1980, 0x19AB },
        { 0x19B0, 0x19C9 },
        { 0x1A00, 0x1A16 },
        { 0x1A20, 0x1A54 },
        { 0x1AA7, 0x1AA7 },
        { 0x1B05, 0x1B33 },
        { 0x1B45, 0x1B4C },
        { 0x1B83, 0x1BA0 },
        { 0x1BAE, 0x1BAF },
        { 0x1BBA, 0x1BE5 },
        { 0x1C00, 0x1C23 },
        { 0x1C4D, 0x1C4F },
        { 0x1C5A, 0x1C7D },
        { 0x1C80, 0x1C88 },
        { 0x1C90, 0x1CBA },
        { 0x1CBD, 0x1CBF },
        { 0x1CE9, 0x1CEC },
        { 0x1CEE, 0x1CF3 },
        { 0x1CF5, 0x1CF6 },
        { 0x1CFA, 0x1CFA },
        { 0x1D00, 0x1DBF },
        { 0x1E00, 0x1F15 },
        { 0x1F18, 0x1F1D },
        { 0x1F20, 0x1F45 },
        { 0x1F48, 0x1F4D },
        { 0x1F50, 0x1F57 },
        { 0x1F59, 0x1F59 },
        { 0x1F5B, 0x1F5B },
        { 0x1F5D, 0x1F5D },
        { 0x1F5F, 0x1F7D },
        { 0x1F80, 0x1FB4 },
        { 0x1FB6, 0x1FBC },
        { 0x1FBE, 0x1FBE },
        { 0x1FC2, 0x1FC4 },
        { 0x1FC6, 0x1FCC },
        { 0x1FD0, 0x1FD3 },
        { 0x1FD6, 0x1FDB },
        { 0x1FE0, 0x1FEC },
        { 0x1FF2, 0x1FF4 },
        { 0x1FF6, 0x1FFC },
        { 0x2071, 0x2071 },
        { 0x207F, 0x207F },
        { 0x2090, 0x209C },
        { 0x2102, 0x2102 },
        { 0x2107, 0x2107 },
        { 0x210A, 0x2113 },
        { 0x2115, 0x2115 },
        { 0x2119, 0x211D },
        { 0x2124, 0x2124 },
        { 0x2126, 0x2126 },
        { 0x2128, 0x2128 },
        { 0x212A, 0x212D },
        { 0x212F, 0x2139 },
        { 0x213C, 0x213F },
        { 0x2145, 0x2149 },
        { 0x214E, 0x214E },
        { 0x2183, 0x2184 },
        { 0x2C00, 0x2CE4 },
        { 0x2CEB, 0x2CEE },
        { 0x2CF2, 0x2CF3 },
        { 0x2D00, 0x2D25 },
        { 0x2D27, 0x2D27 },
        { 0x2D2D, 0x2D2D },
        { 0x2D30, 0x2D67 },
        { 0x2D6F, 0x2D6F },
        { 0x2D80, 0x2D96 },
        { 0x2DA0, 0x2DA6 },
        { 0x2DA8, 0x2DAE },
        { 0x2DB0, 0x2DB6 },
        { 0x2DB8, 0x2DBE },
        { 0x2DC0, 0x2DC6 },
        { 0x2DC8, 0x2DCE },
        { 0x2DD0, 0x2DD6 },
        { 0x2DD8, 0x2DDE },
        { 0x2E2F, 0x2E2F },
        { 0x3005, 0x3006 },
        { 0x3031, 0x3035 },
        { 0x303B, 0x303C },
        { 0x3041, 0x3096 },
        { 0x309D, 0x309F },
        { 0x30A1, 0x30FA },
        { 0x30FC, 0x30FF },
        { 0x3105, 0x312F },
        { 0x3131, 0x318E },
        { 0x31A0, 0x31BF },
        { 0x31F0, 0x31FF },
        { 0x3400, 0x4DBF },
        { 0x4E00, 0xA48C },
        { 0xA4D0, 0xA4FD },
        { 0xA500, 0xA60C },
        { 0xA610, 0xA61F },
        { 0xA62A, 0xA62B },
        { 0xA640, 0xA66E },
        { 0xA67F, 0xA69D },
        { 0xA6A0, 0xA6E5 },
        { 0xA717, 0xA71F },
        { 0xA722, 0xA788 },
        { 0xA78B, 0xA7CA },
        { 0xA7D0, 0xA7D1 },
        { 0xA7D3, 0xA7D3 },
        { 0xA7D5, 0xA7D9 },
        { 0xA7F2, 0xA801 },
        { 0xA803, 0xA805 },
        { 0xA807, 0xA80A },
        { 0xA80C, 0xA822 },
        { 0xA840, 0xA873 },
        { 0xA882, 0xA8B3 },
        { 0xA8F2, 0xA8F7 },
        { 0xA8FB, 0xA8FB },
        { 0xA8FD, 0xA8FE },
        { 0xA90A, 0xA925 },
        { 0xA930, 0xA946 },
        { 0xA960, 0xA97C },
        { 0xA984, 0xA9B2 },
        { 0xA9CF, 0xA9CF },
        { 0xA9E0, 0xA9E4 },
        { 0xA9E6, 0xA9EF },
        { 0xA9FA, 0xA9FE },
        { 0xAA00, 0xAA28 },
        { 0xAA40, 0xAA42 },
        { 0xAA44, 0xAA4B },
        { 0xAA60, 0xAA76 },
        { 0xAA7A, 0xAA7A },
        { 0xAA7E, 0xAAAF },
        { 0xAAB1, 0xAAB1 },
        { 0xAAB5, 0xAAB6 },
        { 0xAAB9, 0xAABD },
        { 0xAAC0, 0xAAC0 },
        { 0xAAC2, 0xAAC2 },
        { 0xAADB, 0xAADD },
        { 0xAAE0, 0xAAEA },
        { 0xAAF2, 0xAAF4 },
        { 0xAB01, 0xAB06 },
        { 0xAB09, 0xAB0E },
        { 0xAB11, 0xAB16 },
        { 0xAB20, 0xAB26 },
        { 0xAB28, 0xAB2E },
        { 0xAB30, 0xAB5A },
        { 0xAB5C, 0xAB69 },
        { 0xAB70, 0xABE2 },
        { 0xAC00, 0xD7A3 },
        { 0xD7B0, 0xD7C6 },
        { 0xD7CB, 0xD7FB },
        { 0xF900, 0xFA6D },
        { 0xFA70, 0xFAD9 },
        { 0xFB00, 0xFB06 },
        { 0xFB13, 0xFB17 },
        { 0xFB1D, 0xFB1D },
        { 0xFB1F, 0xFB28 },
        { 0xFB2A, 0xFB36 },
        { 0xFB38, 0xFB3C },
        { 0xFB3E, 0xFB3E },
        { 0xFB40, 0xFB41 },
        { 0xFB43, 0xFB44 },
        { 0xFB46, 0xFBB1 },
        { 0xFBD3, 0xFD3D },
        { 0xFD50, 0xFD8F },
        { 0xFD92, 0xFDC7 },
        { 0xFDF0, 0xFDFB },
        { 0xFE70, 0xFE74 },
        { 0xFE76, 0xFEFC },
        { 0xFF21, 0xFF3A },
        { 0xFF41, 0xFF5A },
        { 0xFF66, 0xFFBE },
        { 0xFFC2, 0xFFC7 },
        { 0xFFCA, 0xFFCF },
        { 0xFFD2, 0xFFD7 },
        { 0xFFDA, 0xFFDC },
        { 0x10000, 0x1000B },
        { 0x1000D, 0x10026 },
        { 0x10028, 0x1003A },
        { 0x1003C, 0x1003D },
        { 0x1003F, 0x1004D },
        { 0x10050, 0x1005D },
        { 0x10080, 0x100FA },
        { 0x10280, 0x1029C },
        { 0x102A0, 0x102D0 },
        { 0x10300, 0x1031F },
        { 0x1032D, 0x10340 },
        { 0x10342, 0x10349 },
        { 0x10350, 0x10375 },
        { 0x10380, 0x1039D },
        { 0x103A0, 0x103C3 },
        { 0x103C8, 0x103CF },
        { 0x10400, 0x1049D },
        { 0x104B0, 0x104D3 },
        { 0x104D8, 0x104FB },
        { 0x10500, 0x10527 },
        { 0x10530, 0x10563 },
        { 0x10570, 0x1057A },
        { 0x1057C, 0x1058A },
        { 0x1058C, 0x10592 },
        { 0x10594, 0x10595 },
        { 0x10597, 0x105A1 },
        { 0x105A3, 0x105B1 },
        { 0x105B3, 0x105B9 },
        { 0x105BB, 0x105BC },
        { 0x10600, 0x10736 },
        { 0x10740, 0x10755 },
        { 0x10760, 0x10767 },
        { 0x10780, 0x10785 },
        { 0x10787, 0x107B0 },
        { 0x107B2, 0x107BA },
        { 0x10800, 0x10805 },
        { 0x10808, 0x10808 },
        { 0x1080A, 0x10835 },
        { 0x10837, 0x10838 },
        { 0x1083C, 0x1083C },
        { 0x1083F, 0x10855 },
        { 0x10860, 0x10876 },
        { 0x10880, 0x1089E },
        { 0x108E0, 0x108F2 },
        { 0x108F4, 0x108F5 },
        { 0x10900, 0x10915 },
        { 0x10920, 0x10939 },
        { 0x10980, 0x109B7 },
        { 0x109BE, 0x109BF },
        { 0x10A00, 0x10A00 },
        { 0x10A10, 0x10A13 },
        { 0x10A15, 0x10A17 },
        { 0x10A19, 0x10A35 },
        { 0x10A60, 0x10A7C },
        { 0x10A80, 0x10A9C },
        { 0x10AC0, 0x10AC7 },
        { 0x10AC9, 0x10AE4 },
        { 0x10B00, 0x10B35 },
        { 0x10B40, 0x10B55 },
        { 0x10B60, 0x10B72 },
        { 0x10B80, 0x10B91 },
        { 0x10C00, 0x10C48 },
        { 0x10C80, 0x10CB2 },
        { 0x10CC0, 0x10CF2 },
        { 0x10D00, 0x10D23 },
        { 0x10E80, 0x10EA9 },
        { 0x10EB0, 0x10EB1 },
        { 0x10F00, 0x10F1C },
        { 0x10F27, 0x10F27 },
        { 0x10F30, 0x10F45 },
        { 0x10F70, 0x10F81 },
        { 0x10FB0, 0x10FC4 },
        { 0x10FE0, 0x10FF6 },
        { 0x11003, 0x11037 },
        { 0x11071, 0x11072 },
        { 0x11075, 0x11075 },
        { 0x11083, 0x110AF },
        { 0x110D0, 0x110E8 },
        { 0x11103, 0x11126 },
        { 0x11144, 0x11144 },
        { 0x11147, 0x11147 },
        { 0x11150, 0x11172 },
        { 0x11176, 0x11176 },
        { 0x11183, 0x111B2 },
        { 0x111C1, 0x111C4 },
        { 0x111DA, 0x111DA },
        { 0x111DC, 0x111DC },
        { 0x11200, 0x11211 },
        { 0x11213, 0x1122B },
        { 0x1123F, 0x11240 },
        { 0x11280, 0x11286 },
        { 0x11288, 0x11288 },
        { 0x1128A, 0x1128D },
        { 0x1128F, 0x1129D },
        { 0x1129F, 0x112A8 },
        { 0x112B0, 0x112DE },
        { 0x11305, 0x1130C },
        { 0x1130F, 0x11310 },
        { 0x11313, 0x11328 },
        { 0x1132A, 0x11330 },
        { 0x11332, 0x11333 },
        { 0x11335, 0x11339 },
        { 0x1133D, 0x1133D },
        { 0x11350, 0x11350 },
        { 0x1135D, 0x11361 },
        { 0x11400, 0x11434 },
        { 0x11447, 0x1144A },
        { 0x1145F, 0x11461 },
        { 0x11480, 0x114AF },
        { 0x114C4, 0x114C5 },
        { 0x114C7, 0x114C7 },
        { 0x11580, 0x115AE },
        { 0x115D8, 0x115DB },
        { 0x11600, 0x1162F },
        { 0x11644, 0x11644 },
        { 0x11680, 0x116AA },
        { 0x116B8, 0x116B8 },
        { 0x11700, 0x1171A },
        { 0x11740, 0x11746 },
        { 0x11800, 0x1182B },
        { 0x118A0, 0x118DF },
        { 0x118FF, 0x11906 },
        { 0x11909, 0x11909 },
        { 0x1190C, 0x11913 },
        { 0x11915, 0x11916 },
        { 0x11918, 0x1192F },
        { 0x1193F, 0x1193F },
        { 0x11941, 0x11941 },
        { 0x119A0, 0x119A7 },
        { 0x119AA, 0x119D0 },
        { 0x119E1, 0x119E1 },
        { 0x119E3, 0x119E3 },
        { 0x11A00, 0x11A00 },
        { 0x11A0B, 0x11A32 },
        { 0x11A3A, 0x11A3A },
        { 0x11A50, 0x11A50 },
        { 0x11A5C, 0x11A89 },
        { 0x11A9D, 0x11A9D },
        { 0x11AB0, 0x11AF8 },
        { 0x11C00, 0x11C08 },
        { 0x11C0A, 0x11C2E },
        { 0x11C40, 0x11C40 },
        { 0x11C72, 0x11C8F },
        { 0x11D00, 0x11D06 },
        { 0x11D08, 0x11D09 },
        { 0x11D0B, 0x11D30 },
        { 0x11D46, 0x11D46 },
        { 0x11D60, 0x11D65 },
        { 0x11D67, 0x11D68 },
        { 0x11D6A, 0x11D89 },
        { 0x11D98, 0x11D98 },
        { 0x11EE0, 0x11EF2 },
        { 0x11F02, 0x11F02 },
        { 0x11F04, 0x11F10 },
        { 0x11F12, 0x11F33 },
        { 0x11FB0, 0x11FB0 },
        { 0x12000, 0x12399 },
        { 0x12480, 0x12543 },
        { 0x12F90, 0x12FF0 },
        { 0x13000, 0x1342F },
        { 0x13441, 0x13446 },
        { 0x14400, 0x14646 },
        { 0x16800, 0x16A38 },
        { 0x16A40, 0x16A5E },
        { 0x16A70, 0x16ABE },
        { 0x16AD0, 0x16AED },
        { 0x16B00, 0x16B2F },
        { 0x16B40, 0x16B43 },
        { 0x16B63, 0x16B77 },
        { 0x16B7D, 0x16B8F },
        { 0x16E40, 0x16E7F },
        { 0x16F00, 0x16F4A },
        { 0x16F50, 0x16F50 },
        { 0x16F93, 0x16F9F },
        { 0x16FE0, 0x16FE1 },
        { 0x16FE3, 0x16FE3 },
        { 0x17000, 0x187F7 },
        { 0x18800, 0x18CD5 },
        { 0x18D00, 0x18D08 },
        { 0x1AFF0, 0x1AFF3 },
        { 0x1AFF5, 0x1AFFB },
        { 0x1AFFD, 0x1AFFE },
        { 0x1B000, 0x1B122 },
        { 0x1B132, 0x1B132 },
        { 0x1B150, 0x1B152 },
        { 0x1B155, 0x1B155 },
        { 0x1B164, 0x1B167 },
        { 0x1B170, 0x1B2FB },
        { 0x1BC00, 0x1BC6A },
        { 0x1BC70, 0x1BC7C },
        { 0x1BC80, 0x1BC88 },
        { 0x1BC90, 0x1BC99 },
        { 0x1D400, 0x1D454 },
        { 0x1D456, 0x1D49C },
        { 0x1D49E, 0x1D49F },
        { 0x1D4A2, 0x1D4A2 },
        { 0x1D4A5, 0x1D4A6 },
        { 0x1D4A9, 0x1D4AC },
        { 0x1D4AE, 0x1D4B9 },
        { 0x1D4BB, 0x1D4BB },
        { 0x1D4BD, 0x1D4C3 },
        { 0x1D4C5, 0x1D505 },
        { 0x1D507, 0x1D50A },
        { 0x1D50D, 0x1D514 },
        { 0x1D516, 0x1D51C },
        { 0x1D51E, 0x1D539 },
        { 0x1D53B, 0x1D53E },
        { 0x1D540, 0x1D544 },
        { 0x1D546, 0x1D546 },
        { 0x1D54A, 0x1D550 },
        { 0x1D552, 0x1D6A5 },
        { 0x1D6A8, 0x1D6C0 },
        { 0x1D6C2, 0x1D6DA },
        { 0x1D6DC, 0x1D6FA },
        { 0x1D6FC, 0x1D714 },
        { 0x1D716, 0x1D734 },
        { 0x1D736, 0x1D74E },
        { 0x1D750, 0x1D76E },
        { 0x1D770, 0x1D788 },
        { 0x1D78A, 0x1D7A8 },
        { 0x1D7AA, 0x1D7C2 },
        { 0x1D7C4, 0x1D7CB },
        { 0x1DF00, 0x1DF1E },
        { 0x1DF25, 0x1DF2A },
        { 0x1E030, 0x1E06D },
        { 0x1E100, 0x1E12C },
        { 0x1E137, 0x1E13D },
        { 0x1E14E, 0x1E14E },
        { 0x1E290, 0x1E2AD },
        { 0x1E2C0, 0x1E2EB },
        { 0x1E4D0, 0x1E4EB },
        { 0x1E7E0, 0x1E7E6 },
        { 0x1E7E8, 0x1E7EB },
        { 0x1E7ED, 0x1E7EE },
        { 0x1E7F0, 0x1E7FE },
        { 0x1E800, 0x1E8C4 },
        { 0x1E900, 0x1E943 },
        { 0x1E94B, 0x1E94B },
        { 0x1EE00, 0x1EE03 },
        { 0x1EE05, 0x1EE1F },
        { 0x1EE21, 0x1EE22 },
        { 0x1EE24, 0x1EE24 },
        { 0x1EE27, 0x1EE27 },
        { 0x1EE29, 0x1EE32 },
        { 0x1EE34, 0x1EE37 },
        { 0x1EE39, 0x1EE39 },
        { 0x1EE3B, 0x1EE3B },
        { 0x1EE42, 0x1EE42 },
        { 0x1EE47, 0x1EE47 },
        { 0x1EE49, 0x1EE49 },
        { 0x1EE4B, 0x1EE4B },
        { 0x1EE4D, 0x1EE4F },
        { 0x1EE51, 0x1EE52 },
        { 0x1EE54, 0x1EE54 },
        { 0x1EE57, 0x1EE57 },
        { 0x1EE59, 0x1EE59 },
        { 0x1EE5B, 0x1EE5B },
        { 0x1EE5D, 0x1EE5D },
        { 0x1EE5F, 0x1EE5F },
        { 0x1EE61, 0x1EE62 },
        { 0x1EE64, 0x1EE64 },
        { 0x1EE67, 0x1EE6A },
        { 0x1EE6C, 0x1EE72 },
        { 0x1EE74, 0x1EE77 },
        { 0x1EE79, 0x1EE7C },
        { 0x1EE7E, 0x1EE7E },
        { 0x1EE80, 0x1EE89 },
        { 0x1EE8B, 0x1EE9B },
        { 0x1EEA1, 0x1EEA3 },
        { 0x1EEA5, 0x1EEA9 },
        { 0x1EEAB, 0x1EEBB },
        { 0x20000, 0x2A6DF },
        { 0x2A700, 0x2B739 },
        { 0x2B740, 0x2B81D },
        { 0x2B820, 0x2CEA1 },
        { 0x2CEB0, 0x2EBE0 },
        { 0x2F800, 0x2FA1D },
        { 0x30000, 0x3134A },
        { 0x31350, 0x323AF },
};
static const struct range digits[] = {
        { 0x0030, 0x0039 },
        { 0x0660, 0x0669 },
        { 0x06F0, 0x06F9 },
        { 0x07C0, 0x07C9 },
        { 0x0966, 0x096F },
        { 0x09E6, 0x09EF },
        { 0x0A66, 0x0A6F },
        { 0x0AE6, 0x0AEF },
        { 0x0B66, 0x0B6F },
        { 0x0BE6, 0x0BEF },
        { 0x0C66, 0x0C6F },
        { 0x0CE6, 0x0CEF },
        { 0x0D66, 0x0D6F },
        { 0x0DE6, 0x0DEF },
        { 0x0E50, 0x0E59 },
        { 0x0ED0, 0x0ED9 },
        { 0x0F20, 0x0F29 },
        { 0x1040, 0x1049 },
        { 0x1090, 0x1099 },
        { 0x17E0, 0x17E9 },
        { 0x1810, 0x1819 },
        { 0x1946, 0x194F },
        { 0x19D0, 0x19D9 },
        { 0x1A80, 0x1A89 },
        { 0x1A90, 0x1A99 },
        { 0x1B50, 0x1B59 },
        { 0x1BB0, 0x1BB9 },
        { 0x1C40, 0x1C49 },
        { 0x1C50, 0x1C59 },
        { 0xA620, 0xA629 },
        { 0xA8D0, 0xA8D9 },
        { 0xA900, 0xA909 },
        { 0xA9D0, 0xA9D9 },
        { 0xA9F0, 0xA9F9 },
        { 0xAA50, 0xAA59 },
        { 0xABF0, 0xABF9 },
        { 0xFF10, 0xFF19 },
        { 0x104A0, 0x104A9 },
        { 0x10D30, 0x10D39 },
        { 0x11066, 0x1106F },
        { 0x110F0, 0x110F9 },
        { 0x11136, 0x1113F },
        { 0x111D0, 0x111D9 },
        { 0x112F0, 0x112F9 },
        { 0x11450, 0x11459 },
        { 0x114D0, 0x114D9 },
        { 0x11650, 0x11659 },
        { 0x116C0, 0x116C9 },
        { 0x11730, 0x11739 },
        { 0x118E0, 0x118E9 },
        { 0x11950, 0x11959 },
        { 0x11C50, 0x11C59 },
        { 0x11D50, 0x11D59 },
        { 0x11DA0, 0x11DA9 },
        { 0x11F50, 0x11F59 },
        { 0x16A60, 0x16A69 },
        { 0x16AC0, 0x16AC9 },
        { 0x16B50, 0x16B59 },
        { 0x1D7CE, 0x1D7FF },
        { 0x1E140, 0x1E149 },
        { 0x1E2F0, 0x1E2F9 },
        { 0x1E4F0, 0x1E4F9 },
        { 0x1E950, 0x1E959 },
        { 0x1FBF0, 0x1FBF9 },
};
/* clang-format on */

static bool in_table(const struct range *t, size_t n, uint32_t c)
{
        size_t lo = 0, hi = n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (c < t[mid].lo)
                        hi = mid;
                else if (c > t[mid].hi)
                        lo = mid + 1;
                else
                        return true;
        }
        return false;
}

static bool is_letter(int32_t r)
{
        return r >= 0 && in_table(letters, ELEMENTSOF(letters), (uint32_t) r);
}

static bool is_digit(int32_t r)
{
        return r >= 0 && in_table(digits, ELEMENTSOF(digits), (uint32_t) r);
}

/* Go's unicode.IsSpace: the Latin-1 blanks, then the White_Space property. */
static bool is_space(int32_t r)
{
        switch (r) {
        case '\t':
        case '\n':
        case '\v':
        case '\f':
        case '\r':
        case ' ':
        case 0x85:
        case 0xA0:
        case 0x1680:
        case 0x2028:
        case 0x2029:
        case 0x202F:
        case 0x205F:
        case 0x3000:
                return true;
        default:
                return r >= 0x2000 && r <= 0x200A;
        }
}

/* One rune at s[pos..len) as Go's utf8.DecodeRune: bytes that are not UTF-8
 * read as U+FFFD, one byte wide. EOF_RUNE (width 0) at the end. */
static int32_t decode_at(const char *s, size_t len, size_t pos, size_t *width)
{
        uint32_t c;
        size_t w;

        if (pos >= len) {
                *width = 0;
                return EOF_RUNE;
        }
        w = kiln_utf8_decode((const unsigned char *) s + pos, len - pos, &c);
        if (w == 0) {
                *width = 1;
                return RUNE_ERROR;
        }
        *width = w;
        return (int32_t) c;
}

static size_t encode_rune(int32_t r, char out[static 4])
{
        uint32_t c =
                r < 0 || r > 0x10FFFF || (r >= 0xD800 && r <= 0xDFFF) ? RUNE_ERROR : (uint32_t) r;

        if (c < 0x80) {
                out[0] = (char) c;
                return 1;
        }
        if (c < 0x800) {
                out[0] = (char) (0xC0 | (c >> 6));
                out[1] = (char) (0x80 | (c & 0x3F));
                return 2;
        }
        if (c < 0x10000) {
                out[0] = (char) (0xE0 | (c >> 12));
                out[1] = (char) (0x80 | ((c >> 6) & 0x3F));
                out[2] = (char) (0x80 | (c & 0x3F));
                return 3;
        }
        out[0] = (char) (0xF0 | (c >> 18));
        out[1] = (char) (0x80 | ((c >> 12) & 0x3F));
        out[2] = (char) (0x80 | ((c >> 6) & 0x3F));
        out[3] = (char) (0x80 | (c & 0x3F));
        return 4;
}

/* Go's text/scanner as the lexer uses it: Peek and Next over runes. */
struct reader {
        const char *s;
        size_t len;
        size_t pos;
};

static void reader_init(struct reader *rd, const char *s, size_t len)
{
        size_t w;

        *rd = (struct reader){ .s = s, .len = len };
        if (decode_at(s, len, 0, &w) == 0xFEFF)
                rd->pos = w;
}

static int32_t rd_peek(const struct reader *rd)
{
        size_t w;

        return decode_at(rd->s, rd->len, rd->pos, &w);
}

static int32_t rd_next(struct reader *rd)
{
        size_t w;
        int32_t r = decode_at(rd->s, rd->len, rd->pos, &w);

        rd->pos += w;
        return r;
}

/* A set of names (open addressing); the strings are owned. */
struct name_set {
        char **slot;
        size_t cap; /* 0 or a power of two */
        size_t n;
};

static uint64_t hash_name(const char *s)
{
        uint64_t h = 0xcbf29ce484222325ULL;

        for (; *s; s++)
                h = (h ^ (unsigned char) *s) * 0x100000001b3ULL;
        return h;
}

static void name_set_add(struct name_set *set, const char *name)
{
        size_t i;

        if ((set->n + 1) * 2 > set->cap) {
                size_t cap = set->cap ? set->cap * 2 : 16;
                char **slot = kiln_xcalloc(cap, sizeof(char *));

                for (i = 0; i < set->cap; i++) {
                        size_t j;

                        if (!set->slot[i])
                                continue;
                        for (j = hash_name(set->slot[i]) & (cap - 1); slot[j];
                             j = (j + 1) & (cap - 1))
                                ;
                        slot[j] = set->slot[i];
                }
                free(set->slot);
                set->slot = slot;
                set->cap = cap;
        }
        for (i = hash_name(name) & (set->cap - 1); set->slot[i]; i = (i + 1) & (set->cap - 1))
                if (streq(set->slot[i], name))
                        return;
        set->slot[i] = kiln_xstrdup(name);
        set->n++;
}

static void name_set_release(struct name_set *set)
{
        for (size_t i = 0; i < set->cap; i++)
                free(set->slot[i]);
        free(set->slot);
        *set = (struct name_set){ 0 };
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Moves the names into a sorted NULL-terminated array; the set is emptied. */
static char **name_set_steal_sorted(struct name_set *set, size_t *ret_n)
{
        char **v = kiln_xcalloc(set->n + 1, sizeof(char *));
        size_t n = 0;

        for (size_t i = 0; i < set->cap; i++)
                if (set->slot[i])
                        v[n++] = TAKE_PTR(set->slot[i]);
        qsort(v, n, sizeof(char *), cmp_str);
        *ret_n = n;
        name_set_release(set);
        return v;
}

/* BuildKit's wordsStruct. Its buffer lives in struct shell because BuildKit
 * shares it between nested calls (see stop_on). */
struct words {
        char **v;
        size_t n;
        size_t cap;
        bool in_word;
};

struct shell {
        int32_t escape;
        bool raw_quotes;
        bool skip_process_quotes;
        bool skip_unset_env;
        bool raw_escapes; /* current value: ${x#...} and ${x/...} turn it on */
        const struct kiln_shell_env *env;
        struct reader rd;
        struct kiln_buf wbuf;
        size_t words_total;
        struct name_set matched;
        struct name_set unmatched;
        unsigned depth;
        uint64_t work;
        char *cause; /* what failed, without the "failed to process" context */
};

_printf_(3, 4) static int fail(struct shell *sh, int code, const char *fmt, ...)
{
        va_list ap;

        free(sh->cause);
        va_start(ap, fmt);
        sh->cause = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        return code;
}

static int too_long(struct shell *sh)
{
        return fail(sh, -E2BIG, "expanded text longer than %u bytes", KILN_LIMIT_SHELL_OUTPUT);
}

static int out_append(struct shell *sh, struct kiln_buf *b, const void *p, size_t n)
{
        if (kiln_buf_append(b, p, n) < 0)
                return too_long(sh);
        return 0;
}

static int out_puts(struct shell *sh, struct kiln_buf *b, const char *s)
{
        return out_append(sh, b, s, strlen(s));
}

static int out_rune(struct shell *sh, struct kiln_buf *b, int32_t r)
{
        char tmp[4];

        return out_append(sh, b, tmp, encode_rune(r, tmp));
}

static struct kiln_buf new_buf(void)
{
        return KILN_BUF_INIT(KILN_LIMIT_SHELL_OUTPUT);
}

/* -- words (BuildKit's wordsStruct) ------------------------------------ */

static int words_flush(struct shell *sh, struct words *w)
{
        if (sh->wbuf.len == 0)
                return 0;
        sh->words_total += sh->wbuf.len;
        if (sh->words_total > KILN_LIMIT_SHELL_OUTPUT)
                return too_long(sh);
        if (w->n + 2 > w->cap) {
                w->cap = w->cap ? w->cap * 2 : 8;
                w->v = kiln_xreallocarray(w->v, w->cap, sizeof(char *));
        }
        w->v[w->n++] = kiln_buf_steal(&sh->wbuf);
        w->v[w->n] = NULL;
        w->in_word = false;
        return 0;
}

static int words_add_raw_char(struct shell *sh, struct words *w, int32_t r)
{
        w->in_word = true;
        return out_rune(sh, &sh->wbuf, r);
}

static int words_add_char(struct shell *sh, struct words *w, int32_t r)
{
        if (!is_space(r))
                return words_add_raw_char(sh, w, r);
        if (w->in_word && sh->wbuf.len != 0)
                return words_flush(sh, w);
        return 0;
}

static int words_add_string(struct shell *sh, struct words *w, const char *s, size_t len)
{
        size_t pos = 0, width;
        int r;

        while (pos < len) {
                int32_t c = decode_at(s, len, pos, &width);

                r = words_add_char(sh, w, c);
                if (r < 0)
                        return r;
                pos += width;
        }
        return 0;
}

static int words_add_raw_string(struct shell *sh, struct words *w, const char *s, size_t len)
{
        w->in_word = true;
        return out_append(sh, &sh->wbuf, s, len);
}

static void words_release(struct words *w)
{
        kiln_shell_strv_free(w->v);
        *w = (struct words){ 0 };
}

/* -- environment ---------------------------------------------------------- */

static bool env_lookup(const struct kiln_shell_env *env, const char *name, const char **value)
{
        size_t nl = strlen(name), i;

        if (!env)
                return false;
        if (env->lookup)
                return env->lookup(env->userdata, name, value);
        for (i = env->n_pairs; i-- > 0;)
                if (env->pairs[2 * i] && streq(env->pairs[2 * i], name)) {
                        *value = env->pairs[2 * i + 1] ? env->pairs[2 * i + 1] : "";
                        return true;
                }
        for (i = env->n_vars; i-- > 0;) {
                const char *e = env->vars[i], *eq;
                size_t kl;

                if (!e)
                        continue;
                eq = strchr(e, '=');
                kl = eq ? (size_t) (eq - e) : strlen(e);
                if (kl == nl && memcmp(e, name, nl) == 0) {
                        *value = eq ? eq + 1 : "";
                        return true;
                }
        }
        return false;
}

/* BuildKit's getEnv: looks name up and records it as matched or not. */
static bool get_env(struct shell *sh, const char *name, const char **value)
{
        const char *v = NULL;

        if (env_lookup(sh->env, name, &v)) {
                *value = v ? v : "";
                name_set_add(&sh->matched, name);
                return true;
        }
        *value = "";
        name_set_add(&sh->unmatched, name);
        return false;
}

/* -- patterns of ${x#p} ${x%p} ${x/p/r} ----------------------------------- */

enum tok_kind {
        TOK_LIT,  /* one rune */
        TOK_ANY,  /* ?: any rune but a newline (the regexp "." BuildKit uses) */
        TOK_STAR, /* *: any run of runes but newlines */
};

struct tok {
        enum tok_kind kind;
        int32_t r;
};

struct pattern {
        struct tok *t;
        size_t n;
        bool lazy;     /* '*' prefers the shortest run */
        bool anchored; /* match only at the start */
};

struct thread {
        size_t state; /* token index; n is the match state */
        size_t start;
};

struct queue {
        struct thread *t;
        size_t n;
        uint32_t *mark; /* closure(i) done when mark[i] == gen */
        uint32_t gen;
        size_t size; /* entries of t and mark */
};

struct machine {
        struct pattern p;
        struct queue q[2];
};

static void machine_release(struct machine *m)
{
        free(m->p.t);
        for (size_t i = 0; i < 2; i++) {
                free(m->q[i].t);
                free(m->q[i].mark);
        }
        *m = (struct machine){ 0 };
}

/* BuildKit's convertShellPatternToRegex: '*' and '?' are wildcards, '\'
 * makes '*', '?' and '\' literal and is dropped before '}' and '/';
 * everything else, brackets included, is literal. */
static int machine_init(struct shell *sh, struct machine *m, const char *s, size_t len, bool greedy,
                        bool anchored)
{
        struct reader rd;
        int32_t c;

        *m = (struct machine){ .p = { .lazy = !greedy, .anchored = anchored } };
        if (len > KILN_LIMIT_SHELL_PATTERN)
                return fail(sh, -E2BIG, "pattern in substitution longer than %u bytes",
                            KILN_LIMIT_SHELL_PATTERN);
        m->p.t = kiln_xcalloc(len + 1, sizeof(struct tok));
        reader_init(&rd, s, len);
        while ((c = rd_next(&rd)) != EOF_RUNE) {
                struct tok t = { TOK_LIT, c };

                if (c == '*')
                        t.kind = TOK_STAR;
                else if (c == '?')
                        t.kind = TOK_ANY;
                else if (c == '\\') {
                        int32_t pk = rd_peek(&rd);

                        if (pk == '}' || pk == '/')
                                continue;
                        t.r = c = rd_next(&rd);
                        if (c != '*' && c != '?' && c != '\\') {
                                char tmp[4];
                                size_t n = encode_rune(c, tmp);

                                return fail(
                                        sh, -EINVAL,
                                        "invalid pattern (%.*s) in substitution: invalid escape "
                                        "'\\%.*s'",
                                        (int) len, s, (int) n, tmp);
                        }
                }
                m->p.t[m->p.n++] = t;
        }
        for (size_t i = 0; i < 2; i++) {
                m->q[i].t = kiln_xcalloc(m->p.n + 1, sizeof(struct thread));
                m->q[i].mark = kiln_xcalloc(m->p.n + 1, sizeof(uint32_t));
                m->q[i].size = m->p.n + 1;
        }
        return 0;
}

static void queue_clear(struct queue *q)
{
        q->n = 0;
        if (++q->gen == 0) {
                /* wrapped: forget every mark */
                for (size_t i = 0; i < q->size; i++)
                        q->mark[i] = 0;
                q->gen = 1;
        }
}

/* Adds the threads of closure(i) in priority order: a greedy star first
 * tries one more rune, a lazy one first tries what follows it. */
static void machine_add(const struct pattern *p, struct queue *q, size_t i, size_t start)
{
        size_t k = i;

        if (!p->lazy) {
                while (q->mark[k] != q->gen) {
                        q->mark[k] = q->gen;
                        q->t[q->n++] = (struct thread){ k, start };
                        if (k == p->n || p->t[k].kind != TOK_STAR)
                                break;
                        k++;
                }
                return;
        }
        while (k < p->n && p->t[k].kind == TOK_STAR && q->mark[k] != q->gen)
                q->mark[k++] = q->gen;
        if (q->mark[k] != q->gen) {
                q->mark[k] = q->gen;
                q->t[q->n++] = (struct thread){ k, start };
        }
        while (k-- > i)
                q->t[q->n++] = (struct thread){ k, start };
}

/* Go's Regexp.FindStringIndex on s[from..len): the leftmost match, and of
 * those the one the wildcards' priorities prefer. Returns 1 with the match
 * in *ret_start and *ret_end, 0 for none, or -E2BIG past the work limit. */
static int machine_find(struct shell *sh, struct machine *m, const char *s, size_t len, size_t from,
                        size_t *ret_start, size_t *ret_end)
{
        struct queue *run = &m->q[0], *next = &m->q[1];
        bool matched = false;
        size_t pos = from;

        queue_clear(run);
        for (;;) {
                size_t width;
                int32_t r;

                if (run->n == 0) {
                        if (m->p.anchored && pos != 0)
                                break;
                        if (matched)
                                break;
                }
                if (!matched && (!m->p.anchored || pos == 0))
                        machine_add(&m->p, run, 0, pos);
                r = decode_at(s, len, pos, &width);
                sh->work += run->n + 1;
                if (sh->work > KILN_LIMIT_SHELL_MATCH_WORK)
                        return fail(sh, -E2BIG, "pattern matching in substitution exceeds %u steps",
                                    KILN_LIMIT_SHELL_MATCH_WORK);
                queue_clear(next);
                for (size_t j = 0; j < run->n; j++) {
                        const struct thread *t = &run->t[j];
                        const struct tok *tk;

                        if (t->state == m->p.n) {
                                /* the best match so far; lower-priority
                                 * threads can only find worse ones */
                                matched = true;
                                *ret_start = t->start;
                                *ret_end = pos;
                                break;
                        }
                        tk = &m->p.t[t->state];
                        if (tk->kind == TOK_LIT ? r == tk->r : r != EOF_RUNE && r != '\n')
                                machine_add(&m->p, next,
                                            tk->kind == TOK_STAR ? t->state : t->state + 1,
                                            t->start);
                }
                if (width == 0)
                        break;
                pos += width;
                struct queue *tmp = run;
                run = next;
                next = tmp;
        }
        return matched ? 1 : 0;
}

/* Go's []rune(s) reversed and encoded again: bytes that are not UTF-8 come
 * out as U+FFFD, as in BuildKit's reverseString. */
static char *reverse_string(const char *s, size_t len, size_t *ret_len)
{
        char *out = kiln_xmalloc(len * 3 + 1);
        size_t o, width, total = 0;

        /* Decode forwards (the only way to find the rune boundaries Go
         * sees), then write each rune at its mirrored place. */
        for (size_t p = 0; p < len; p += width) {
                char tmp[4];

                total += encode_rune(decode_at(s, len, p, &width), tmp);
        }
        o = total;
        for (size_t p = 0; p < len; p += width) {
                char tmp[4];
                size_t n = encode_rune(decode_at(s, len, p, &width), tmp);

                o -= n;
                memcpy(out + o, tmp, n);
        }
        out[total] = '\0';
        *ret_len = total;
        return out;
}

/* BuildKit's reversePattern: reverses the runes but keeps each "\x" pair in
 * order, so escapes survive. */
static char *reverse_pattern(const char *s, size_t len, size_t *ret_len)
{
        size_t n = 0, width, total = 0, o;
        int32_t *runes = kiln_xcalloc(len + 1, sizeof(int32_t));
        char *out = kiln_xmalloc(len * 3 + 1);
        size_t i;

        for (size_t p = 0; p < len; p += width)
                runes[n++] = decode_at(s, len, p, &width);
        for (i = 0; i < n; i++) {
                char tmp[4];

                total += encode_rune(runes[i], tmp);
        }
        o = total;
        for (i = 0; i < n;) {
                char a[4], b[4];
                size_t na, nb;

                if (runes[i] == '\\' && i + 1 < n) {
                        /* "\x" lands as "\x" at the mirrored place */
                        na = encode_rune(runes[i], a);
                        nb = encode_rune(runes[i + 1], b);
                        o -= na + nb;
                        memcpy(out + o, a, na);
                        memcpy(out + o + na, b, nb);
                        i += 2;
                } else {
                        na = encode_rune(runes[i], a);
                        o -= na;
                        memcpy(out + o, a, na);
                        i++;
                }
        }
        free(runes);
        out[total] = '\0';
        *ret_len = total;
        return out;
}

/* ${x#p} ${x##p}: drops the shortest (greedy: longest) prefix of value that
 * pattern matches, into ret. */
static int trim_prefix(struct shell *sh, const char *pat, size_t plen, const char *val, size_t vlen,
                       bool greedy, struct kiln_buf *ret)
{
        struct machine m;
        size_t ms = 0, me = 0;
        int r;

        r = machine_init(sh, &m, pat, plen, greedy, true);
        if (r >= 0)
                r = machine_find(sh, &m, val, vlen, 0, &ms, &me);
        machine_release(&m);
        if (r < 0)
                return r;
        if (r == 0)
                me = 0;
        return out_append(sh, ret, val + me, vlen - me);
}

/* ${x%p} ${x%%p}: as BuildKit, reverses pattern and value, trims the
 * prefix and reverses the rest back. */
static int trim_suffix(struct shell *sh, const char *pat, size_t plen, const char *val, size_t vlen,
                       bool greedy, struct kiln_buf *ret)
{
        _cleanup_free_ char *rpat = NULL, *rval = NULL, *back = NULL;
        struct kiln_buf tmp = new_buf();
        size_t rplen, rvlen, blen;
        int r;

        rpat = reverse_pattern(pat, plen, &rplen);
        rval = reverse_string(val, vlen, &rvlen);
        r = trim_prefix(sh, rpat, rplen, rval, rvlen, greedy, &tmp);
        if (r >= 0) {
                back = reverse_string(tmp.data ? tmp.data : "", tmp.len, &blen);
                r = out_append(sh, ret, back, blen);
        }
        kiln_buf_release(&tmp);
        return r;
}

/* Go's regexp template name: "$name" or "${name}", name made of letters,
 * digits and '_'. Returns the bytes consumed after the '$' (0: not a name)
 * and whether it is group 0, the only group BuildKit's patterns have. */
static size_t template_name(const char *t, size_t len, bool *is_zero)
{
        size_t i = 0, start, width;
        bool brace = false;

        if (len > 0 && t[0] == '{') {
                brace = true;
                i = 1;
        }
        start = i;
        while (i < len) {
                int32_t c = decode_at(t, len, i, &width);

                if (!is_letter(c) && !is_digit(c) && c != '_')
                        break;
                i += width;
        }
        if (i == start)
                return 0;
        *is_zero = i - start == 1 && t[start] == '0';
        if (brace) {
                if (i >= len || t[i] != '}')
                        return 0;
                i++;
        }
        return i;
}

/* Go's Regexp.Expand of repl for one match: "$$" is '$', "$0" and "${0}"
 * the match, other names nothing, a '$' before no name stays. */
static int expand_template(struct shell *sh, struct kiln_buf *out, const char *repl, size_t rlen,
                           const char *match, size_t mlen)
{
        size_t i = 0;
        int r;

        while (i < rlen) {
                const char *d = memchr(repl + i, '$', rlen - i);
                size_t n;
                bool zero = false;

                if (!d)
                        break;
                r = out_append(sh, out, repl + i, (size_t) (d - repl) - i);
                if (r < 0)
                        return r;
                i = (size_t) (d - repl) + 1;
                if (i < rlen && repl[i] == '$') {
                        r = out_append(sh, out, "$", 1);
                        i++;
                } else if ((n = template_name(repl + i, rlen - i, &zero)) == 0) {
                        r = out_append(sh, out, "$", 1);
                } else {
                        i += n;
                        r = zero ? out_append(sh, out, match, mlen) : 0;
                }
                if (r < 0)
                        return r;
        }
        return out_append(sh, out, repl + i, rlen - i);
}

/* ${x/p/r} and ${x//p/r}: Go's FindStringIndex or ReplaceAllString (whose
 * replacement is a template) with the unanchored greedy pattern. */
static int replace(struct shell *sh, const char *pat, size_t plen, const char *repl, size_t rlen,
                   const char *val, size_t vlen, bool all, struct kiln_buf *ret)
{
        struct machine m;
        size_t last_end = 0, search = 0, ms = 0, me = 0;
        int r;

        r = machine_init(sh, &m, pat, plen, true, false);
        if (r < 0)
                goto out;
        if (!all) {
                r = machine_find(sh, &m, val, vlen, 0, &ms, &me);
                if (r < 0)
                        goto out;
                if (r == 0)
                        r = out_append(sh, ret, val, vlen);
                else if ((r = out_append(sh, ret, val, ms)) >= 0 &&
                         (r = out_append(sh, ret, repl, rlen)) >= 0)
                        r = out_append(sh, ret, val + me, vlen - me);
                goto out;
        }
        while (search <= vlen) {
                size_t width;

                r = machine_find(sh, &m, val, vlen, search, &ms, &me);
                if (r < 0)
                        goto out;
                if (r == 0)
                        break;
                r = out_append(sh, ret, val + last_end, ms - last_end);
                if (r < 0)
                        goto out;
                /* no replacement for an empty match right after a match */
                if (me > last_end || ms == 0) {
                        r = expand_template(sh, ret, repl, rlen, val + ms, me - ms);
                        if (r < 0)
                                goto out;
                }
                last_end = me;
                (void) decode_at(val, vlen, search, &width);
                if (search + width > me)
                        search += width;
                else if (search + 1 > me)
                        search++;
                else
                        search = me;
        }
        r = out_append(sh, ret, val + last_end, vlen - last_end);
out:
        machine_release(&m);
        return r < 0 ? r : 0;
}

/* -- the lexer ------------------------------------------------------------ */

static int stop_on(struct shell *sh, int32_t stop, bool raw_escapes, struct words *w,
                   struct kiln_buf *out);

static bool is_special_param(int32_t c)
{
        return c == '@' || c == '*' || c == '#' || c == '?' || c == '-' || c == '$' || c == '!' ||
               c == '0';
}

/* BuildKit's processName: a run of digits, one special parameter, or a run
 * of letters, digits and '_'. */
static int process_name(struct shell *sh, struct kiln_buf *name)
{
        int32_t c;
        int r;

        while ((c = rd_peek(&sh->rd)) != EOF_RUNE) {
                if (name->len == 0 && is_digit(c)) {
                        while ((c = rd_peek(&sh->rd)) != EOF_RUNE && is_digit(c)) {
                                r = out_rune(sh, name, rd_next(&sh->rd));
                                if (r < 0)
                                        return r;
                        }
                        return 0;
                }
                if (name->len == 0 && is_special_param(c))
                        return out_rune(sh, name, rd_next(&sh->rd));
                if (!is_letter(c) && !is_digit(c) && c != '_')
                        break;
                r = out_rune(sh, name, rd_next(&sh->rd));
                if (r < 0)
                        return r;
        }
        return 0;
}

static int single_quote(struct shell *sh, struct kiln_buf *ret)
{
        int32_t c = rd_next(&sh->rd);
        int r;

        if (sh->raw_quotes && (r = out_rune(sh, ret, c)) < 0)
                return r;
        for (;;) {
                c = rd_next(&sh->rd);
                if (c == EOF_RUNE)
                        return fail(sh, -EINVAL,
                                    "unexpected end of statement while looking for matching "
                                    "single-quote");
                if (c == '\'') {
                        if (sh->raw_quotes)
                                return out_rune(sh, ret, c);
                        return 0;
                }
                r = out_rune(sh, ret, c);
                if (r < 0)
                        return r;
        }
}

static int process_dollar(struct shell *sh, struct kiln_buf *ret);

static int double_quote(struct shell *sh, struct kiln_buf *ret)
{
        int32_t c = rd_next(&sh->rd);
        int r;

        if (sh->raw_quotes && (r = out_rune(sh, ret, c)) < 0)
                return r;
        for (;;) {
                switch (rd_peek(&sh->rd)) {
                case EOF_RUNE:
                        return fail(sh, -EINVAL,
                                    "unexpected end of statement while looking for matching "
                                    "double-quote");
                case '"':
                        c = rd_next(&sh->rd);
                        if (sh->raw_quotes)
                                return out_rune(sh, ret, c);
                        return 0;
                case '$': {
                        struct kiln_buf v = new_buf();

                        r = process_dollar(sh, &v);
                        if (r >= 0)
                                r = out_append(sh, ret, v.data, v.len);
                        kiln_buf_release(&v);
                        if (r < 0)
                                return r;
                        break;
                }
                default:
                        c = rd_next(&sh->rd);
                        if (c == sh->escape) {
                                int32_t pk;

                                if (sh->raw_escapes && (r = out_rune(sh, ret, c)) < 0)
                                        return r;
                                pk = rd_peek(&sh->rd);
                                /* an escape at the end is dropped; the loop
                                 * then reports the missing quote */
                                if (pk == EOF_RUNE)
                                        continue;
                                /* only these can be escaped; other escapes
                                 * stay as they are */
                                if (pk == '"' || pk == '$' || pk == sh->escape)
                                        c = rd_next(&sh->rd);
                        }
                        r = out_rune(sh, ret, c);
                        if (r < 0)
                                return r;
                }
        }
}

/* "<" or "<<" and the blanks after it, kept raw in words as BuildKit does
 * for heredoc markers. */
static int possible_heredoc(struct shell *sh, struct kiln_buf *ret)
{
        int32_t c;
        int r;

        (void) rd_next(&sh->rd);
        if (rd_peek(&sh->rd) != '<')
                return out_append(sh, ret, "<", 1);
        (void) rd_next(&sh->rd);
        r = out_append(sh, ret, "<<", 2);
        while (r >= 0 && ((c = rd_peek(&sh->rd)) == '\t' || c == '\r' || c == ' '))
                r = out_rune(sh, ret, rd_next(&sh->rd));
        return r;
}

static int unsupported_modifier(struct shell *sh, const struct kiln_buf *chs)
{
        return fail(sh, -EINVAL, "unsupported modifier (%s) in substitution", chs->data);
}

/* The operand of ${name<op>word}, up to the closing brace. */
static int operand(struct shell *sh, int32_t stop, bool raw_escapes, struct kiln_buf *word,
                   const char *missing)
{
        int r = stop_on(sh, stop, raw_escapes, NULL, word);

        if (r == -EINVAL && rd_peek(&sh->rd) == EOF_RUNE)
                return fail(sh, -EINVAL, "%s", missing);
        return r;
}

static int process_braces(struct shell *sh, struct kiln_buf *ret);

static int process_dollar(struct shell *sh, struct kiln_buf *ret)
{
        _cleanup_free_ char *name = NULL;
        struct kiln_buf nb = new_buf();
        const char *value;
        bool set;
        int r;

        (void) rd_next(&sh->rd);
        if (rd_peek(&sh->rd) == '{')
                return process_braces(sh, ret);

        r = process_name(sh, &nb);
        name = kiln_buf_steal(&nb);
        if (r < 0)
                return r;
        if (!*name)
                return out_append(sh, ret, "$", 1);
        set = get_env(sh, name, &value);
        if (!set && sh->skip_unset_env) {
                r = out_append(sh, ret, "$", 1);
                return r < 0 ? r : out_puts(sh, ret, name);
        }
        return out_puts(sh, ret, value);
}

static int process_braces(struct shell *sh, struct kiln_buf *ret)
{
        _cleanup_free_ char *name = NULL;
        struct kiln_buf nb = new_buf(), chs = new_buf(), word = new_buf(), repl = new_buf();
        bool null_is_unset = false, set, all, raw;
        const char *value;
        int32_t c;
        int r;

        (void) rd_next(&sh->rd);
        switch (rd_peek(&sh->rd)) {
        case EOF_RUNE:
                return fail(sh, -EINVAL, "syntax error: missing '}'");
        case '{':
        case '}':
        case ':':
                return fail(sh, -EINVAL, "syntax error: bad substitution");
        }
        r = process_name(sh, &nb);
        name = kiln_buf_steal(&nb);
        if (r < 0)
                return r;
        c = rd_next(&sh->rd);
        if ((r = out_rune(sh, &chs, c)) < 0)
                goto out;

        switch (c) {
        case '}':
                set = get_env(sh, name, &value);
                if (!set && sh->skip_unset_env) {
                        r = out_append(sh, ret, "${", 2);
                        if (r >= 0)
                                r = out_puts(sh, ret, name);
                        if (r >= 0)
                                r = out_append(sh, ret, "}", 1);
                        goto out;
                }
                r = out_puts(sh, ret, value);
                goto out;
        case ':':
        case '+':
        case '-':
        case '?':
        case '#':
        case '%':
                if (c == ':') {
                        null_is_unset = true;
                        c = rd_next(&sh->rd);
                        if ((r = out_rune(sh, &chs, c)) < 0)
                                goto out;
                }
                raw = c == '#' || c == '%';
                if (null_is_unset && raw) {
                        r = unsupported_modifier(sh, &chs);
                        goto out;
                }
                r = operand(sh, '}', raw, &word, "syntax error: missing '}'");
                if (r < 0)
                        goto out;
                if (!word.data)
                        (void) kiln_buf_puts(&word, "");
                set = get_env(sh, name, &value);
                if (sh->skip_unset_env && !set) {
                        r = kiln_buf_printf(ret, "${%s%s%s}", name, chs.data, word.data);
                        if (r < 0)
                                r = too_long(sh);
                        goto out;
                }
                switch (c) {
                case '-':
                        r = out_puts(sh, ret,
                                     !set || (null_is_unset && !*value) ? word.data : value);
                        break;
                case '+':
                        r = !set || (null_is_unset && !*value) ? 0 : out_puts(sh, ret, word.data);
                        break;
                case '?':
                        if (!set)
                                r = fail(sh, -EINVAL, "%s: %s", name,
                                         word.len ? word.data : "is not allowed to be unset");
                        else if (null_is_unset && !*value)
                                r = fail(sh, -EINVAL, "%s: %s", name,
                                         word.len ? word.data : "is not allowed to be empty");
                        else
                                r = out_puts(sh, ret, value);
                        break;
                case '%':
                case '#': {
                        /* "%%" and "##" take the longest match */
                        bool greedy = word.len > 0 && word.data[0] == (char) c;
                        const char *p = word.data + greedy;
                        size_t plen = word.len - greedy;

                        if (c == '%')
                                r = trim_suffix(sh, p, plen, value, strlen(value), greedy, ret);
                        else
                                r = trim_prefix(sh, p, plen, value, strlen(value), greedy, ret);
                        break;
                }
                default:
                        r = unsupported_modifier(sh, &chs);
                }
                goto out;
        case '/':
                all = rd_peek(&sh->rd) == '/';
                if (all)
                        (void) rd_next(&sh->rd);
                r = operand(sh, '/', true, &word, "syntax error: missing '/' in ${}");
                if (r < 0)
                        goto out;
                r = operand(sh, '}', true, &repl, "syntax error: missing '}'");
                if (r < 0)
                        goto out;
                if (!word.data)
                        (void) kiln_buf_puts(&word, "");
                if (!repl.data)
                        (void) kiln_buf_puts(&repl, "");
                set = get_env(sh, name, &value);
                if (sh->skip_unset_env && !set) {
                        r = kiln_buf_printf(ret, "${%s/%s/%s}", name, word.data, repl.data);
                        if (r < 0)
                                r = too_long(sh);
                        goto out;
                }
                r = replace(sh, word.data, word.len, repl.data, repl.len, value, strlen(value), all,
                            ret);
                goto out;
        default:
                r = unsupported_modifier(sh, &chs);
                goto out;
        }
out:
        kiln_buf_release(&chs);
        kiln_buf_release(&word);
        kiln_buf_release(&repl);
        return r < 0 ? r : 0;
}

static int stop_on_loop(struct shell *sh, int32_t stop, struct words *w, struct kiln_buf *out)
{
        int32_t c;
        int r;

        while ((c = rd_peek(&sh->rd)) != EOF_RUNE) {
                if (stop != EOF_RUNE && c == stop) {
                        (void) rd_next(&sh->rd);
                        return w ? words_flush(sh, w) : 0;
                }
                if (c == '$' || c == '<' || (!sh->skip_process_quotes && (c == '\'' || c == '"'))) {
                        struct kiln_buf tmp = new_buf();

                        if (c == '$')
                                r = process_dollar(sh, &tmp);
                        else if (c == '<')
                                r = possible_heredoc(sh, &tmp);
                        else if (c == '\'')
                                r = single_quote(sh, &tmp);
                        else
                                r = double_quote(sh, &tmp);
                        if (r >= 0)
                                r = out_append(sh, out, tmp.data, tmp.len);
                        if (r >= 0 && w)
                                r = c == '$' ? words_add_string(sh, w, tmp.data, tmp.len)
                                             : words_add_raw_string(sh, w, tmp.data, tmp.len);
                        kiln_buf_release(&tmp);
                        if (r < 0)
                                return r;
                        continue;
                }
                c = rd_next(&sh->rd);
                if (c == sh->escape) {
                        if (sh->raw_escapes) {
                                if (w && (r = words_add_raw_char(sh, w, c)) < 0)
                                        return r;
                                if ((r = out_rune(sh, out, c)) < 0)
                                        return r;
                        }
                        /* the escape token escapes anything, except the end */
                        c = rd_next(&sh->rd);
                        if (c == EOF_RUNE)
                                break;
                        r = w ? words_add_raw_char(sh, w, c) : 0;
                } else
                        r = w ? words_add_char(sh, w, c) : 0;
                if (r < 0 || (r = out_rune(sh, out, c)) < 0)
                        return r;
        }
        if (stop != EOF_RUNE)
                return fail(sh, -EINVAL,
                            "unexpected end of statement while looking for matching %c",
                            (char) stop);
        return w ? words_flush(sh, w) : 0;
}

/* BuildKit's processStopOn: expands up to stop (EOF_RUNE: the end) into
 * out. BuildKit shares one words buffer between all levels and clears it
 * whenever a level starts, so text collected for the current word before
 * a ${x...} that has an operand is dropped from the split words (not from
 * the expanded word): ProcessWords("a${x:-b}") is ["b"]. kiln keeps that. */
static int stop_on(struct shell *sh, int32_t stop, bool raw_escapes, struct words *w,
                   struct kiln_buf *out)
{
        bool saved = sh->raw_escapes;
        int r;

        if (sh->depth >= KILN_LIMIT_SHELL_DEPTH + 1)
                return fail(sh, -E2BIG, "substitutions nested deeper than %u levels",
                            KILN_LIMIT_SHELL_DEPTH);
        sh->depth++;
        kiln_buf_reset(&sh->wbuf);
        sh->raw_escapes = raw_escapes;
        r = stop_on_loop(sh, stop, w, out);
        sh->raw_escapes = saved;
        sh->depth--;
        return r;
}

/* -- public API ----------------------------------------------------------- */

char **kiln_shell_strv_free(char **v)
{
        if (v)
                for (char **p = v; *p; p++)
                        free(*p);
        free(v);
        return NULL;
}

void kiln_shell_result_release(struct kiln_shell_result *r)
{
        if (!r)
                return;
        free(r->word);
        kiln_shell_strv_free(r->words);
        kiln_shell_strv_free(r->matched);
        kiln_shell_strv_free(r->unmatched);
        *r = (struct kiln_shell_result){ 0 };
}

static void shell_release(struct shell *sh)
{
        kiln_buf_release(&sh->wbuf);
        name_set_release(&sh->matched);
        name_set_release(&sh->unmatched);
        free(sh->cause);
}

int kiln_shell_expand(const struct kiln_shell_lex *lex, const char *word,
                      const struct kiln_shell_env *env, struct kiln_shell_result *ret,
                      struct kiln_error **err)
{
        static const struct kiln_shell_lex defaults = { .escape = '\\' };
        struct shell sh = { 0 };
        struct words w = { 0 };
        struct kiln_buf out = new_buf();
        size_t len;
        int r;

        *ret = (struct kiln_shell_result){ 0 };
        if (!word)
                return kiln_error_set(err, -EINVAL, "failed to process: no word");
        len = strlen(word);
        if (len > KILN_LIMIT_SHELL_INPUT)
                return kiln_error_set(err, -E2BIG, "failed to process: word longer than %u bytes",
                                      KILN_LIMIT_SHELL_INPUT);
        if (!lex)
                lex = &defaults;
        sh = (struct shell){
                .escape = lex->escape ? (unsigned char) lex->escape : '\\',
                .raw_quotes = lex->raw_quotes,
                .skip_process_quotes = lex->skip_process_quotes,
                .skip_unset_env = lex->skip_unset_env,
                .raw_escapes = lex->raw_escapes,
                .env = env,
                .wbuf = new_buf(),
        };
        reader_init(&sh.rd, word, len);

        r = stop_on(&sh, EOF_RUNE, sh.raw_escapes, &w, &out);
        if (r < 0) {
                struct kiln_buf q = KILN_BUF_INIT(SIZE_MAX);

                (void) kiln_buf_go_quote(&q, word, len);
                r = kiln_error_set(err, r, "failed to process %s: %s", q.data ? q.data : "\"\"",
                                   sh.cause ? sh.cause : "expansion failed");
                kiln_buf_release(&q);
                kiln_buf_release(&out);
                words_release(&w);
                shell_release(&sh);
                return r;
        }

        ret->word = kiln_buf_steal(&out);
        ret->words = w.v ? w.v : kiln_xcalloc(1, sizeof(char *));
        ret->n_words = w.n;
        ret->matched = name_set_steal_sorted(&sh.matched, &ret->n_matched);
        ret->unmatched = name_set_steal_sorted(&sh.unmatched, &ret->n_unmatched);
        shell_release(&sh);
        return 0;
}

int kiln_shell_process_word(const struct kiln_shell_lex *lex, const char *word,
                            const struct kiln_shell_env *env, char **ret, struct kiln_error **err)
{
        struct kiln_shell_result res;
        int r = kiln_shell_expand(lex, word, env, &res, err);

        if (r < 0)
                return r;
        *ret = TAKE_PTR(res.word);
        kiln_shell_result_release(&res);
        return 0;
}

int kiln_shell_process_words(const struct kiln_shell_lex *lex, const char *word,
                             const struct kiln_shell_env *env, char ***ret, size_t *ret_n,
                             struct kiln_error **err)
{
        struct kiln_shell_result res;
        int r = kiln_shell_expand(lex, word, env, &res, err);

        if (r < 0)
                return r;
        if (ret_n)
                *ret_n = res.n_words;
        *ret = TAKE_PTR(res.words);
        kiln_shell_result_release(&res);
        return 0;
}
